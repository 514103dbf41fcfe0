//! Both HTTP/2 client engines of the engine comparison (`make bench-h2`) return the same, correct
//! responses on the benchmark's workload, so the benchmark measures working code: our multiplexer
//! through its local-leg API and the `h2` crate's client, both replaying the `h2` server's
//! recorded bytes (see `benches/h2_engines/harness.rs`).

#[allow(dead_code)]
#[path = "../benches/h2_engines/harness.rs"]
mod harness;

use harness::{record_script, Case, H2Client, OursClient, Tally};

fn both(case: &Case) -> (Tally, Tally) {
    let script = record_script(case);
    let mut ours = OursClient::new(&script, case);
    ours.keep = true;
    let a = ours.run(&script, case);
    let mut h2 = H2Client::new(&script);
    h2.keep = true;
    let b = h2.run(&script, case);
    (a, b)
}

fn expected(case: &Case) -> Vec<Option<harness::Kept>> {
    let mut headers = vec![
        (":status".to_string(), "200".to_string()),
        ("content-length".to_string(), case.body.to_string()),
        ("content-type".to_string(), "application/octet-stream".to_string()),
        ("date".to_string(), "Wed, 02 Dec 2026 00:00:00 GMT".to_string()),
        ("server".to_string(), "envoy".to_string()),
    ];
    headers.sort();
    vec![Some((headers, vec![b'x'; case.body])); case.requests]
}

#[test]
fn both_engines_return_the_same_correct_responses() {
    let cases = [
        Case { name: "t-seq-0b", body: 0, concurrency: 1, requests: 5 },
        Case { name: "t-c3-1k", body: 1024, concurrency: 3, requests: 9 },
        // Two DATA frames per response (the max frame size is 65,536), several streams at once.
        Case { name: "t-c4-70k", body: 70_000, concurrency: 4, requests: 8 },
    ];
    for case in &cases {
        let (ours, h2) = both(case);
        for (engine, t) in [("ours", &ours), ("h2", &h2)] {
            assert_eq!(t.completed, case.requests, "{engine} {}", case.name);
            assert_eq!(t.body_bytes, case.requests * case.body, "{engine} {}", case.name);
            assert_eq!(t.responses, expected(case), "{engine} {}: responses", case.name);
        }
        assert!(ours.client_bytes > 0 && h2.client_bytes > 0, "{}: both wrote requests", case.name);
    }
}
