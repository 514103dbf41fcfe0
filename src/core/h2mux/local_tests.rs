//! Tests of local (in-process) egress legs: the HTTP filter path hands the mux header lists and
//! body chunks and gets [`LocalFrame`]s back, on the same tunnel as wire egress connections.

use super::*;

/// Applies `out` and routes bytes until quiet.
fn step(w: &mut World, out: Output) {
    w.apply(out);
    w.run();
}

fn frames_of(w: &World, id: EgressId, sid: u32) -> Vec<LocalFrame> {
    w.local.iter().filter(|(e, s, _)| *e == id && *s == sid).map(|(_, _, f)| f.clone()).collect()
}

fn local_body(w: &World, id: EgressId, sid: u32) -> Vec<u8> {
    frames_of(w, id, sid)
        .into_iter()
        .filter_map(|f| match f {
            LocalFrame::Data { bytes, .. } => Some(bytes),
            _ => None,
        })
        .flatten()
        .collect()
}

fn local_headers(w: &World, id: EgressId, sid: u32) -> Vec<(Vec<(String, String)>, bool)> {
    frames_of(w, id, sid)
        .into_iter()
        .filter_map(|f| match f {
            LocalFrame::Headers { fields, end } => Some((strs(&fields), end)),
            _ => None,
        })
        .collect()
}

fn local_reset(w: &World, id: EgressId, sid: u32) -> Option<u32> {
    frames_of(w, id, sid).into_iter().find_map(|f| match f {
        LocalFrame::Reset { code } => Some(code),
        _ => None,
    })
}

#[test]
fn local_round_trip_with_body_and_trailers() {
    let mut w = World::envoy();
    let out = w.mux.attach_local(100);
    assert!(out.to_egress.is_empty(), "no bytes for a local leg");
    step(&mut w, out);
    let req = [(":method", "POST"), (":scheme", "http"), (":authority", "x"), (":path", "/up"), ("te", "trailers")];
    let out = w.mux.local_open(100, 1, hf(&req), false);
    step(&mut w, out);
    let out = w.mux.local_data(100, 1, b"request body", false);
    step(&mut w, out);
    let out = w.mux.local_trailers(100, 1, hf(&[("x-req-trailer", "1")]));
    step(&mut w, out);
    let th = w.tunnel.headers_on(1);
    assert_eq!(th[0], (owned(&req), false));
    assert_eq!(th[1], (owned(&[("x-req-trailer", "1")]), true));
    assert_eq!(w.tunnel.body_on(1), b"request body");

    w.tunnel.headers(1, &[(":status", "200"), ("content-type", "application/grpc")], false);
    w.tunnel.data(1, b"response body", false);
    w.tunnel.trailers(1, &[("grpc-status", "0")]);
    w.run();
    assert_eq!(
        local_headers(&w, 100, 1),
        vec![
            (owned(&[(":status", "200"), ("content-type", "application/grpc")]), false),
            (owned(&[("grpc-status", "0")]), true)
        ]
    );
    assert_eq!(local_body(&w, 100, 1), b"response body");
    assert_eq!(local_reset(&w, 100, 1), None);
    assert!(w.mux.is_idle());
    assert_eq!(w.closed_events(), vec![(100, 1, Some(1), None)]);
}

#[test]
fn local_and_wire_egress_share_one_tunnel() {
    let mut w = World::envoy();
    w.attach(1);
    let out = w.mux.attach_local(2);
    step(&mut w, out);
    w.e(1).headers(1, &get_request("/wire"), true);
    w.run();
    let out = w.mux.local_open(2, 1, hf(&get_request("/local")), true);
    step(&mut w, out);
    assert_eq!(w.tunnel.stream_ids_with_headers(), vec![1, 3]);
    w.tunnel.headers(3, &[(":status", "204")], true);
    w.tunnel.headers(1, &[(":status", "200")], true);
    w.run();
    assert_eq!(local_headers(&w, 2, 1), vec![(owned(&[(":status", "204")]), true)]);
    assert_eq!(w.e(1).headers_on(1), vec![(owned(&[(":status", "200")]), true)]);
    assert!(w.mux.is_idle());
}

#[test]
fn local_response_waits_for_credit() {
    let mut w = World::new(small_settings(), &[], 0);
    let out = w.mux.attach_local(5);
    step(&mut w, out);
    let out = w.mux.local_open(5, 1, hf(&get_request("/big")), true);
    step(&mut w, out);
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    w.tunnel.headers(1, &[(":status", "200")], false);
    w.tunnel.data(1, &body, true);
    w.run();
    // Only the stream window (65,535 with these settings) reaches the client before it credits.
    assert_eq!(local_body(&w, 5, 1).len(), 65_535);
    let mut guard = 0;
    while local_body(&w, 5, 1).len() < body.len() {
        let out = w.mux.local_credit(5, 1, 65_535);
        step(&mut w, out);
        guard += 1;
        assert!(guard < 100, "no progress");
    }
    assert_eq!(local_body(&w, 5, 1), body);
    assert!(matches!(frames_of(&w, 5, 1).last(), Some(LocalFrame::Data { end: true, .. })));
    assert!(w.mux.buffered_bytes() < 70_000);
    assert!(w.mux.is_idle());
}

#[test]
fn local_request_body_follows_the_send_window() {
    let mut w = World::new(small_settings(), &[], 0);
    w.tunnel.auto_credit = false;
    let out = w.mux.attach_local(5);
    step(&mut w, out);
    let out = w.mux.local_open(5, 1, hf(&[(":method", "PUT"), (":scheme", "http"), (":path", "/"), (":authority", "x")]), false);
    step(&mut w, out);
    let win = w.mux.local_send_window(5, 1);
    assert_eq!(win, 65_535);
    // The tunnel's window (65,535) takes the first window's worth: the mux forwards it and
    // credits the client again.
    let out = w.mux.local_data(5, 1, &vec![1u8; win], false);
    step(&mut w, out);
    assert_eq!(w.tunnel.body_on(1).len(), 65_535);
    let win = w.mux.local_send_window(5, 1);
    assert_eq!(win, 65_535);
    // The next window's worth stays queued in the mux (the tunnel window is closed): no credit.
    let out = w.mux.local_data(5, 1, &vec![1u8; win], false);
    step(&mut w, out);
    assert_eq!(w.mux.local_send_window(5, 1), 0, "the tunnel has not credited anything yet");
    // The initiator consumes and credits: the window opens again.
    w.tunnel.auto_credit = true;
    w.tunnel.window_update(0, 1 << 20);
    w.tunnel.window_update(1, 1 << 20);
    w.run();
    assert!(w.mux.local_send_window(5, 1) > 0);
    // Sending more than the window is a stream error, nothing else.
    let over = w.mux.local_send_window(5, 1) + 1;
    let out = w.mux.local_data(5, 1, &vec![2u8; over], false);
    step(&mut w, out);
    assert_eq!(local_reset(&w, 5, 1), Some(error::FLOW_CONTROL_ERROR));
    assert_eq!(w.tunnel.rst_on(1), Some(error::CANCEL));
    assert!(!w.tunnel_closed);
}

#[test]
fn local_cancel_resets_the_tunnel_stream_and_keeps_the_tunnel() {
    let mut w = World::envoy();
    let out = w.mux.attach_local(9);
    step(&mut w, out);
    let out = w.mux.local_open(9, 1, hf(&get_request("/slow")), true);
    step(&mut w, out);
    w.tunnel.headers(1, &[(":status", "200")], false);
    w.tunnel.data(1, b"partial", false);
    w.run();
    let out = w.mux.local_cancel(9, 1);
    step(&mut w, out);
    assert_eq!(w.tunnel.rst_on(1), Some(error::CANCEL));
    assert!(w.mux.is_idle());
    // Late frames of the cancelled stream are dropped; the next stream works.
    w.tunnel.data(1, b"late", true);
    w.run();
    let out = w.mux.local_open(9, 3, hf(&get_request("/next")), true);
    step(&mut w, out);
    w.tunnel.headers(3, &[(":status", "200")], true);
    w.run();
    assert_eq!(local_headers(&w, 9, 3), vec![(owned(&[(":status", "200")]), true)]);
    assert!(w.mux.can_accept_egress());
}

#[test]
fn tunnel_loss_resets_local_streams() {
    let mut w = World::envoy();
    let out = w.mux.attach_local(4);
    step(&mut w, out);
    let out = w.mux.local_open(4, 1, hf(&get_request("/")), true);
    step(&mut w, out);
    let out = w.mux.on_tunnel_closed();
    w.apply(out);
    assert_eq!(local_reset(&w, 4, 1), Some(error::INTERNAL_ERROR));
    assert!(w.closed_egress.contains(&4));
    // A finished mux refuses new local streams.
    let out = w.mux.local_open(4, 3, hf(&get_request("/")), true);
    assert_eq!(out.to_local, vec![(4, 3, LocalFrame::Reset { code: error::REFUSED_STREAM })]);
}

#[test]
fn local_streams_are_refused_while_draining() {
    let mut w = World::envoy();
    let out = w.mux.attach_local(4);
    step(&mut w, out);
    let out = w.mux.local_open(4, 1, hf(&get_request("/")), true);
    step(&mut w, out);
    // GOAWAY from the initiator with last stream 1: no new streams.
    let mut g = Vec::new();
    frame::write_goaway(&mut g, 1, error::NO_ERROR, b"");
    w.tunnel.out.extend_from_slice(&g);
    w.run();
    let out = w.mux.local_open(4, 3, hf(&get_request("/")), true);
    step(&mut w, out);
    assert_eq!(local_reset(&w, 4, 3), Some(error::REFUSED_STREAM));
    assert!(!w.mux.can_accept_egress());
}

/// A POST opened on local leg 100, stream 1, in a fresh world.
fn world_with_open_post(mut w: World) -> World {
    let out = w.mux.attach_local(100);
    step(&mut w, out);
    let req = [(":method", "POST"), (":scheme", "http"), (":authority", "x"), (":path", "/up")];
    let out = w.mux.local_open(100, 1, hf(&req), false);
    step(&mut w, out);
    w
}

#[test]
fn inline_request_data_moves_windows_and_bytes_as_queued_data_would() {
    let run = |inline: bool| {
        let mut w = world_with_open_post(World::envoy());
        for i in 0..7u8 {
            let chunk = vec![i; 9000];
            let out = if inline {
                let mut out = w.mux.local_data_inline(100, 1, chunk.len()).expect("taken: nothing queued, windows open");
                let n = out.to_tunnel.len();
                assert!(n >= 9, "the output ends with the DATA frame header");
                // length 9000, type DATA, no flags, stream 1
                assert_eq!(out.to_tunnel[n - 9..], [0x00, 0x23, 0x28, 0x0, 0x0, 0, 0, 0, 1]);
                out.to_tunnel.extend_from_slice(&chunk);
                out
            } else {
                w.mux.local_data(100, 1, &chunk, false)
            };
            step(&mut w, out);
        }
        (w.tunnel.body_on(1), w.mux.local_send_window(100, 1))
    };
    let (inline, queued) = (run(true), run(false));
    assert_eq!(inline.0.len(), 63_000);
    assert_eq!(inline, queued);
}

#[test]
fn inline_request_data_is_refused_without_changing_anything() {
    // An initiator with RFC 9113's default windows (65,535 bytes) that credits nothing back.
    let mut w = world_with_open_post(World::new(MuxSettings::default(), &[], 0));
    w.tunnel.auto_credit = false;
    assert!(w.mux.local_data_inline(100, 1, 16_385).is_none(), "more than one frame");
    assert!(w.mux.local_data_inline(100, 3, 10).is_none(), "unknown stream");
    assert!(w.mux.local_data_inline(100, 1, 0).is_none(), "nothing to send");
    // Fill the initiator's stream window: the rest waits in the queue...
    let out = w.mux.local_data(100, 1, &vec![7u8; 70_000], false);
    step(&mut w, out);
    assert_eq!(w.tunnel.body_on(1).len(), 65_535);
    let window = w.mux.local_send_window(100, 1);
    // ...so nothing may overtake it, whatever the windows say.
    assert!(w.mux.local_data_inline(100, 1, 10).is_none(), "data is queued");
    assert_eq!(w.mux.local_send_window(100, 1), window, "a refusal changes nothing");
}
