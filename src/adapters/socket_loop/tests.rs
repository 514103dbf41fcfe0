//! The socket loop over real loopback sockets, without Envoy: a test plays the initiator on one
//! end of a TCP connection and hands the other end to [`adopt`], as the listener filter does.
//! Each test uses its own Envoy worker index, so its own loop thread.

use super::*;
use crate::adapters::bootstrap::drain_idle_tunnels;
use crate::adapters::fake;
use crate::core::tracker::{TunnelState, WorkerName};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream as StdStream};
use std::time::{Duration, Instant};

const OK_200: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";

fn request(node: &str) -> Vec<u8> {
    format!(
        "GET /reverse_connections/request HTTP/1.1\r\nhost: 127.0.0.1:9000\r\n\
         x-envoy-reverse-tunnel-node-id: {node}\r\nx-envoy-reverse-tunnel-cluster-id: c1\r\n\
         x-envoy-reverse-tunnel-tenant-id: t1\r\ncontent-length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A connected loopback pair: (the initiator's end, the responder's end).
fn pair() -> (StdStream, StdStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = StdStream::connect(l.local_addr().unwrap()).unwrap();
    let (server, _) = l.accept().unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    (client, server)
}

/// Reads exactly `n` bytes (5 s at most).
fn read_n(s: &mut StdStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).unwrap();
    buf
}

/// Polls `cond` every 10 ms for up to 5 s.
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn config(rt: &Arc<Runtime>) -> OwnedConfig {
    OwnedConfig::with_runtime(rt.clone(), HANDSHAKE_FILTER_NAME, br#"{"ping_interval": "1s"}"#).unwrap()
}

/// Hands the responder's end to the loop of Envoy worker `worker`, answers the handshake of
/// `node` and the first RPING: returns the initiator's end of an admitted tunnel.
fn admitted(cfg: &OwnedConfig, worker: u32, node: &str) -> StdStream {
    let (mut client, server) = pair();
    adopt(cfg, server, worker);
    client.write_all(&request(node)).unwrap();
    assert_eq!(read_n(&mut client, OK_200.len()), OK_200);
    assert_eq!(read_n(&mut client, 5), b"RPING", "the first RPING follows the 200");
    client.write_all(b"RPING").unwrap();
    client
}

#[test]
fn an_owned_socket_is_a_tunnel_like_any_other() {
    let (rt, sink) = fake::runtime("{}");
    let cfg = config(&rt);
    let client = admitted(&cfg, 40, "n1");
    wait_for("the tunnel to be admitted", || rt.tracker.idle_count_for("n1") == 1);
    let listed = rt.tracker.snapshot();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].worker, SOCKET_LOOP_BASE + 40, "the tunnel belongs to the loop of worker 40");
    assert_eq!(WorkerName(listed[0].worker).to_string(), "socket_loop_40");
    assert_eq!(listed[0].state, TunnelState::Idle);

    // Metrics updated on the loop reach Envoy only through the main thread's flush.
    let idle = || sink.get("reverse_tunnel_acceptor.tunnels_idle", &[]);
    assert_eq!(idle(), 0, "nothing applied before the flush");
    rt.stats.flush_deferred();
    assert_eq!(idle(), 1);

    // The initiator goes away: the tunnel leaves the tracker.
    drop(client);
    wait_for("the tunnel to be removed", || rt.tracker.counts().idle + rt.tracker.counts().in_use == 0);
    rt.stats.flush_deferred();
    assert_eq!(idle(), 0);
}

#[test]
fn keepalive_runs_on_the_loop_clock() {
    let (rt, _) = fake::runtime(r#"{"ping_failure_threshold": 2}"#);
    let cfg = config(&rt);
    let mut client = admitted(&cfg, 41, "n2");
    // The next RPING comes after about one ping_interval (1 s, plus up to 15 % jitter).
    let t0 = Instant::now();
    assert_eq!(read_n(&mut client, 5), b"RPING");
    assert!(t0.elapsed() >= Duration::from_millis(700), "pinged after {:?}", t0.elapsed());
    // Unanswered RPINGs close the tunnel: the initiator reads the end of the stream.
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.chunks(5).all(|c| c == b"RPING"), "only RPINGs before the close: {rest:?}");
    wait_for("the tunnel to be removed", || rt.tracker.counts().idle + rt.tracker.counts().in_use == 0);
}

#[test]
fn a_rejected_handshake_gets_its_whole_answer_before_the_close() {
    let (rt, _) = fake::runtime("{}");
    let cfg = config(&rt);
    let (mut client, server) = pair();
    adopt(&cfg, server, 42);
    client.write_all(b"GET /elsewhere HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 4"), "{text}");
    assert_eq!(rt.tracker.counts().idle, 0);
}

#[test]
fn mail_from_another_thread_reaches_the_tunnel() {
    let (rt, _) = fake::runtime("{}");
    let cfg = config(&rt);
    let mut client = admitted(&cfg, 43, "n3");
    wait_for("the tunnel to be admitted", || rt.tracker.idle_count_for("n3") == 1);
    // The drain posts Msg::Drain to the tunnel's endpoint from this (the "main") thread; the
    // loop closes the idle tunnel.
    assert_eq!(drain_idle_tunnels(&rt), 1);
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    wait_for("the tunnel to be removed", || rt.tracker.counts().idle + rt.tracker.counts().in_use == 0);
}

#[test]
fn many_tunnels_share_one_loop() {
    let (rt, _) = fake::runtime("{}");
    let cfg = config(&rt);
    let clients: Vec<StdStream> = (0..50).map(|i| admitted(&cfg, 44, &format!("m{i}"))).collect();
    wait_for("50 tunnels", || rt.tracker.counts().idle == 50);
    drop(clients);
    wait_for("all removed", || rt.tracker.counts().idle + rt.tracker.counts().in_use == 0);
}

#[test]
fn the_listener_filter_takes_only_its_own_name_and_checks_the_config() {
    let (rt, _) = fake::runtime("{}");
    let e = OwnedConfig::with_runtime(rt.clone(), "other", b"").err().unwrap();
    assert_eq!(e.to_string(), "filter_name: unknown listener filter 'other' (expected 'reverse_tunnel' or 'reverse_tunnel_spares')");
    let e = OwnedConfig::with_runtime(rt, HANDSHAKE_FILTER_NAME, br#"{"ping_interval": "0.5s"}"#).err().unwrap();
    assert!(e.to_string().starts_with("reverse_tunnel filter config: ping_interval"), "{e}");
    // The spares mode takes no config of its own.
    assert!(matches!(ListenerConfig::new(SPARES_FILTER_NAME, b""), Ok(ListenerConfig::Spares)));
    assert!(matches!(ListenerConfig::new(SPARES_FILTER_NAME, b" {} "), Ok(ListenerConfig::Spares)));
    let e = ListenerConfig::new(SPARES_FILTER_NAME, br#"{"ping_interval": "2s"}"#).err().unwrap();
    assert!(e.to_string().starts_with("filter_config: listener filter 'reverse_tunnel_spares' takes no config"), "{e}");
}

#[test]
fn metric_updates_are_deferred_only_on_marked_threads() {
    let (rt, sink) = fake::runtime("{}");
    let unsolicited = || sink.get("reverse_tunnel_acceptor.unsolicited_rping", &[]);
    rt.stats.unsolicited_rping(1);
    assert_eq!(unsolicited(), 1, "an Envoy thread updates at once");
    let rt2 = rt.clone();
    std::thread::spawn(move || {
        crate::stats::defer_on_this_thread();
        rt2.stats.unsolicited_rping(1);
    })
    .join()
    .unwrap();
    assert_eq!(unsolicited(), 1, "a socket loop's update waits");
    rt.stats.flush_deferred();
    assert_eq!(unsolicited(), 2);
}

#[test]
fn shutdown_closes_the_sockets_and_stops_taking_new_ones() {
    let (rt, _) = fake::runtime("{}");
    let cfg = config(&rt);
    let mut client = admitted(&cfg, 45, "n4");
    wait_for("the tunnel to be admitted", || rt.tracker.idle_count_for("n4") == 1);
    rt.socket_loops.shutdown();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).expect("the initiator sees the close");
    // A socket arriving after the shutdown is closed at once.
    let (mut late, server) = pair();
    adopt(&cfg, server, 45);
    let mut buf = Vec::new();
    assert_eq!(late.read_to_end(&mut buf).unwrap(), 0, "closed without an answer");
}

#[test]
fn the_out_queue_joins_small_writes_keeps_large_ones_whole_and_forgets_what_was_sent() {
    let mut q = OutQueue::default();
    q.push(b"abc");
    q.push(b"def");
    assert_eq!(q.chunks.len(), 1, "small writes share a chunk");
    q.push(&[7u8; 20_000]);
    q.push(b"xyz");
    assert_eq!(q.chunks.len(), 3, "a large write is a chunk of its own");
    let all: Vec<u8> = q.slices().iter().flat_map(|s| s.to_vec()).collect();
    assert_eq!(&all[..6], b"abcdef");
    assert_eq!(all.len(), 6 + 20_000 + 3);
    q.advance(4);
    assert_eq!(&*q.slices()[0], b"ef", "a partly sent chunk resumes where it stopped");
    q.advance(2 + 19_999);
    let rest: Vec<Vec<u8>> = q.slices().iter().map(|s| s.to_vec()).collect();
    assert_eq!(rest, vec![vec![7u8], b"xyz".to_vec()]);
    q.advance(4);
    assert!(q.is_empty());
}


/// An Envoy connection of the handshake filter `cfg` whose socket listener filter
/// `reverse_tunnel_spares` noted (the fake hands it out once), with `node`'s handshake read:
/// (the initiator's end, the fake Envoy side, the connection).
fn noted_envoy_conn(cfg: &network::NetConfig, id: u64, node: &str, ssl: bool) -> (StdStream, Rc<fake::FakeNetworkFilter>, Rc<dyn Connection>) {
    let (client, server) = pair();
    let f = fake::FakeNetworkFilter::new(id);
    f.ssl.set(ssl);
    *f.socket.borrow_mut() = Some(server);
    let conn = fake::open(cfg, &f);
    fake::read(&conn, &f, &request(node), false);
    (client, f, conn)
}

/// Listener filter `reverse_tunnel_spares` and the handshake filter: a node's first tunnel on a
/// worker stays an Envoy connection, a further one moves to the socket loop with its handshake
/// bytes, and once the keeper closes the next tunnel is kept again.
#[test]
fn a_nodes_spare_tunnel_moves_to_the_socket_loop_and_its_keeper_stays() {
    let (rt, sink) = fake::runtime("{}");
    let cfg = fake::net_config(&rt, HANDSHAKE_FILTER_NAME, r#"{"ping_interval": "1s"}"#);
    let envoy_conn = |id: u64| noted_envoy_conn(&cfg, id, "n9", false);

    // The first tunnel of n9 on worker 0 is its keeper: Envoy's connection answers it.
    let (_c1, f1, conn1) = envoy_conn(1);
    assert_eq!(f1.written(), OK_200);
    assert!(f1.closes().is_empty());

    // The second is a spare: Envoy's connection closes at once, writing nothing, and the
    // socket loop answers the handshake Envoy read.
    let (mut c2, f2, conn2) = envoy_conn(2);
    assert!(f2.written().is_empty());
    assert_eq!(f2.closes(), vec![(CloseType::NoFlush, "reverse_tunnel_moved_to_socket_loop".to_string())]);
    network::on_event(&conn2, ConnectionEvent::LocalClose);
    network::on_destroy(conn2);
    assert_eq!(read_n(&mut c2, OK_200.len()), OK_200);
    assert_eq!(read_n(&mut c2, 5), b"RPING");
    c2.write_all(b"RPING").unwrap();
    wait_for("the spare to be admitted", || rt.tracker.idle_count_for("n9") == 1);
    let listed = rt.tracker.snapshot();
    assert_eq!((listed.len(), listed[0].worker), (1, SOCKET_LOOP_BASE), "the spare belongs to socket loop 0");
    rt.stats.flush_deferred();
    assert!(sink.series("reverse_tunnel_acceptor.tunnels_closed").values().all(|v| *v == 0), "the move closed no tunnel");
    assert_eq!(sink.get("reverse_tunnel_acceptor.spare_tunnels_moved", &[]), 1, "the move is counted");

    // The keeper closes: the next tunnel of n9 on this worker is kept again.
    network::on_event(&conn1, ConnectionEvent::RemoteClose);
    network::on_destroy(conn1);
    let (_c3, f3, _conn3) = envoy_conn(3);
    assert_eq!(f3.written(), OK_200);
    assert!(f3.closes().is_empty());
}

/// A TLS connection never moves: its socket carries Envoy's TLS, and the handshake filter
/// refuses outer TLS with its usual answer.
#[test]
fn a_spare_on_a_tls_listener_stays_and_is_refused_as_before() {
    let (rt, sink) = fake::runtime("{}");
    let cfg = fake::net_config(&rt, HANDSHAKE_FILTER_NAME, r#"{"ping_interval": "1s"}"#);
    let mut keep = Vec::new();
    for id in 1..=2 {
        let (client, f, conn) = noted_envoy_conn(&cfg, id, "n10", true);
        assert!(f.written().starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&f.written()));
        assert!(f.closes().iter().all(|(_, d)| d != "reverse_tunnel_moved_to_socket_loop"));
        keep.push((client, f, conn));
    }
    assert_eq!(sink.get("reverse_tunnel_acceptor.spare_tunnels_moved", &[]), 0);
}
