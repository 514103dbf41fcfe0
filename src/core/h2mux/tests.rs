//! Tests of the multiplexer against test-only HTTP/2 peers: egress clients (as Envoy's upstream
//! codec) and the initiator's server. The peers use this module's HPACK and frame code, but check
//! flow control and framing independently of the mux.

use super::frame::{self, error, flag, kind, setting, FrameReader};
use super::hpack::{Decoder, Encoder, HeaderField, IndexPolicy};
use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, VecDeque};

// ---------------------------------------------------------------------------------------------
// Test peer
// ---------------------------------------------------------------------------------------------

/// What a peer received, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Settings {
        ack: bool,
        params: Vec<(u16, u32)>,
    },
    Headers {
        sid: u32,
        fields: Vec<(String, String)>,
        end: bool,
    },
    Data {
        sid: u32,
        data: Vec<u8>,
        end: bool,
    },
    WindowUpdate {
        sid: u32,
        inc: u32,
    },
    Rst {
        sid: u32,
        code: u32,
    },
    Ping {
        ack: bool,
        data: [u8; 8],
    },
    Goaway {
        last: u32,
        code: u32,
    },
}

#[derive(Default)]
struct Outgoing {
    data: VecDeque<u8>,
    end: bool,
    trailers: Option<Vec<HeaderField>>,
    done: bool,
}

/// A minimal HTTP/2 endpoint: a client (egress) or a server (initiator).
struct Peer {
    name: &'static str,
    /// Server: client-preface bytes still expected.
    preface_left: usize,
    reader: FrameReader,
    max_frame_in: u32,
    dec: Decoder,
    enc: Encoder,
    block: Option<(u32, bool, Vec<u8>)>,
    out: Vec<u8>,
    log: Vec<Ev>,
    // Receive side: the windows this peer advertised.
    recv_conn: i64,
    recv_init: i64,
    pending_init: VecDeque<Option<i64>>,
    recv_streams: BTreeMap<u32, i64>,
    auto_credit: bool,
    // Send side: the windows the mux gave this peer.
    send_conn: i64,
    send_init: i64,
    send_streams: BTreeMap<u32, i64>,
    send_max_frame: usize,
    outgoing: BTreeMap<u32, Outgoing>,
    /// Encoded size of every header block received.
    block_sizes: Vec<usize>,
}

fn hf(list: &[(&str, &str)]) -> Vec<HeaderField> {
    list.iter()
        .map(|(n, v)| HeaderField::new(n.as_bytes(), v.as_bytes()))
        .collect()
}

fn strs(fields: &[HeaderField]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|f| {
            (
                String::from_utf8_lossy(&f.name).into_owned(),
                String::from_utf8_lossy(&f.value).into_owned(),
            )
        })
        .collect()
}

fn owned(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// What Envoy 1.40.0's upstream codec sends first (docs/protocol.md#tunnel-data).
const ENVOY_CLIENT_SETTINGS: [(u16, u32); 5] =
    [(2, 0), (1, 4096), (8, 0), (3, 1024), (4, 16_777_216)];
/// What the initiator's HCM answers (docs/protocol.md#tunnel-data).
const ENVOY_SERVER_SETTINGS: [(u16, u32); 4] = [(1, 4096), (8, 0), (3, 1024), (4, 16_777_216)];

impl Peer {
    fn new(name: &'static str, server: bool, policy: IndexPolicy) -> Peer {
        Peer {
            name,
            preface_left: if server { frame::PREFACE.len() } else { 0 },
            reader: FrameReader::new(frame::DEFAULT_MAX_FRAME_SIZE),
            max_frame_in: frame::DEFAULT_MAX_FRAME_SIZE,
            dec: Decoder::new(4096),
            enc: Encoder::new(4096, policy, true),
            block: None,
            out: Vec::new(),
            log: Vec::new(),
            recv_conn: 65_535,
            recv_init: 65_535,
            pending_init: VecDeque::new(),
            recv_streams: BTreeMap::new(),
            auto_credit: true,
            send_conn: 65_535,
            send_init: 65_535,
            send_streams: BTreeMap::new(),
            send_max_frame: 16_384,
            outgoing: BTreeMap::new(),
            block_sizes: Vec::new(),
        }
    }

    /// An egress client: preface + SETTINGS (+ connection WINDOW_UPDATE).
    fn client(name: &'static str, settings: &[(u16, u32)], conn_window_extra: u32) -> Peer {
        let mut p = Peer::new(name, false, IndexPolicy::All);
        p.out.extend_from_slice(frame::PREFACE);
        p.settings(settings);
        if conn_window_extra > 0 {
            p.window_update(0, conn_window_extra);
        }
        p
    }

    /// The initiator's server; sends its SETTINGS at once.
    fn server(settings: &[(u16, u32)], conn_window_extra: u32) -> Peer {
        let mut p = Peer::new("initiator", true, IndexPolicy::All);
        p.settings(settings);
        if conn_window_extra > 0 {
            p.window_update(0, conn_window_extra);
        }
        p
    }

    fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    fn settings(&mut self, params: &[(u16, u32)]) {
        let mut init = None;
        for &(id, v) in params {
            match id {
                setting::INITIAL_WINDOW_SIZE => init = Some(i64::from(v)),
                setting::MAX_FRAME_SIZE => {
                    // Takes effect at once for what we accept (the mux only goes above 16384
                    // after seeing it).
                    self.max_frame_in = self.max_frame_in.max(v);
                    self.reader = FrameReader::new(self.max_frame_in);
                }
                setting::HEADER_TABLE_SIZE => self.dec.set_max_allowed(v as usize),
                _ => {}
            }
        }
        self.pending_init.push_back(init);
        frame::write_settings(&mut self.out, params);
    }

    fn window_update(&mut self, sid: u32, inc: u32) {
        if sid == 0 {
            self.recv_conn += i64::from(inc);
        } else if let Some(w) = self.recv_streams.get_mut(&sid) {
            *w += i64::from(inc);
        }
        frame::write_window_update(&mut self.out, sid, inc);
    }

    fn headers(&mut self, sid: u32, fields: &[(&str, &str)], end: bool) {
        self.headers_fields(sid, hf(fields), end);
    }

    fn headers_fields(&mut self, sid: u32, fields: Vec<HeaderField>, end: bool) {
        let init = self.recv_init;
        self.recv_streams.entry(sid).or_insert(init);
        let sinit = self.send_init;
        self.send_streams.entry(sid).or_insert(sinit);
        let mut block = Vec::new();
        self.enc.encode(&fields, &mut block);
        frame::write_header_block(&mut self.out, sid, end, &block, self.send_max_frame as u32);
    }

    /// Queues DATA (sent as windows allow); `end` sets END_STREAM on the last frame.
    fn data(&mut self, sid: u32, bytes: &[u8], end: bool) {
        let o = self.outgoing.entry(sid).or_default();
        o.data.extend(bytes.iter().copied());
        o.end |= end;
        self.pump_send();
    }

    /// Queues trailers after the queued DATA.
    fn trailers(&mut self, sid: u32, fields: &[(&str, &str)]) {
        let o = self.outgoing.entry(sid).or_default();
        o.trailers = Some(hf(fields));
        o.end = true;
        self.pump_send();
    }

    fn rst(&mut self, sid: u32, code: u32) {
        frame::write_rst_stream(&mut self.out, sid, code);
    }

    fn pump_send(&mut self) {
        let sids: Vec<u32> = self.outgoing.keys().copied().collect();
        for sid in sids {
            while let Some(o) = self.outgoing.get_mut(&sid) {
                if o.done {
                    break;
                }
                let sw = self
                    .send_streams
                    .get(&sid)
                    .copied()
                    .unwrap_or(self.send_init);
                if !o.data.is_empty() {
                    let n = (o.data.len() as i64)
                        .min(self.send_conn)
                        .min(sw)
                        .min(self.send_max_frame as i64)
                        .max(0) as usize;
                    if n == 0 {
                        break;
                    }
                    let chunk: Vec<u8> = o.data.drain(..n).collect();
                    let es = o.data.is_empty() && o.end && o.trailers.is_none();
                    frame::write_data(&mut self.out, sid, es, &chunk);
                    o.done = es;
                    self.send_conn -= n as i64;
                    *self.send_streams.entry(sid).or_insert(sw) -= n as i64;
                    continue;
                }
                if let Some(t) = o.trailers.take() {
                    o.done = true;
                    let mut block = Vec::new();
                    self.enc.encode(&t, &mut block);
                    frame::write_header_block(
                        &mut self.out,
                        sid,
                        true,
                        &block,
                        self.send_max_frame as u32,
                    );
                } else if o.end {
                    o.done = true;
                    frame::write_data(&mut self.out, sid, true, &[]);
                }
                break;
            }
        }
    }

    /// Processes bytes from the mux.
    fn feed(&mut self, mut input: &[u8]) {
        while self.preface_left > 0 && !input.is_empty() {
            let off = frame::PREFACE.len() - self.preface_left;
            assert_eq!(input[0], frame::PREFACE[off], "{}: bad preface", self.name);
            self.preface_left -= 1;
            input = &input[1..];
        }
        let mut input = bytes::Bytes::copy_from_slice(input);
        loop {
            let f = match self.reader.pull(&mut input) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => panic!("{}: mux sent an oversized frame {e:?}", self.name),
            };
            self.on_frame(f.header, &f.payload);
        }
        self.pump_send();
    }

    fn on_frame(&mut self, h: frame::FrameHeader, p: &[u8]) {
        if let Some((sid, _, _)) = &self.block {
            assert!(
                h.kind == kind::CONTINUATION && h.stream == *sid,
                "{}: interleaved header block",
                self.name
            );
        }
        match h.kind {
            kind::SETTINGS => {
                if h.has(flag::ACK) {
                    if let Some(Some(v)) = self.pending_init.pop_front() {
                        let delta = v - self.recv_init;
                        self.recv_init = v;
                        for w in self.recv_streams.values_mut() {
                            *w += delta;
                        }
                    }
                    self.log.push(Ev::Settings {
                        ack: true,
                        params: vec![],
                    });
                    return;
                }
                let params: Vec<(u16, u32)> = p
                    .chunks_exact(6)
                    .map(|c| {
                        (
                            u16::from_be_bytes([c[0], c[1]]),
                            u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                        )
                    })
                    .collect();
                for &(id, v) in &params {
                    match id {
                        setting::INITIAL_WINDOW_SIZE => {
                            let delta = i64::from(v) - self.send_init;
                            self.send_init = i64::from(v);
                            for w in self.send_streams.values_mut() {
                                *w += delta;
                            }
                        }
                        setting::MAX_FRAME_SIZE => self.send_max_frame = v as usize,
                        setting::HEADER_TABLE_SIZE => self.enc.set_peer_limit(v),
                        _ => {}
                    }
                }
                frame::write_settings_ack(&mut self.out);
                self.log.push(Ev::Settings { ack: false, params });
            }
            kind::HEADERS => {
                let mut body = frame::strip_padding(h.flags, p).expect("padding");
                if h.has(flag::PRIORITY) {
                    body = &body[5..];
                }
                let end = h.has(flag::END_STREAM);
                if h.has(flag::END_HEADERS) {
                    self.on_block(h.stream, end, body.to_vec());
                } else {
                    self.block = Some((h.stream, end, body.to_vec()));
                }
            }
            kind::CONTINUATION => {
                let (sid, end, mut buf) = self.block.take().expect("CONTINUATION without HEADERS");
                buf.extend_from_slice(p);
                if h.has(flag::END_HEADERS) {
                    self.on_block(sid, end, buf);
                } else {
                    self.block = Some((sid, end, buf));
                }
            }
            kind::DATA => {
                let len = p.len() as i64;
                self.recv_conn -= len;
                assert!(
                    self.recv_conn >= 0,
                    "{}: connection window exceeded",
                    self.name
                );
                let init = self.recv_init;
                let w = self.recv_streams.entry(h.stream).or_insert(init);
                *w -= len;
                assert!(
                    *w >= 0,
                    "{}: stream {} window exceeded",
                    self.name,
                    h.stream
                );
                let data = frame::strip_padding(h.flags, p).expect("padding").to_vec();
                let end = h.has(flag::END_STREAM);
                if self.auto_credit && len > 0 {
                    self.window_update(0, len as u32);
                    if !end {
                        self.window_update(h.stream, len as u32);
                    }
                }
                self.log.push(Ev::Data {
                    sid: h.stream,
                    data,
                    end,
                });
            }
            kind::WINDOW_UPDATE => {
                let inc = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff;
                if h.stream == 0 {
                    self.send_conn += i64::from(inc);
                } else {
                    let init = self.send_init;
                    *self.send_streams.entry(h.stream).or_insert(init) += i64::from(inc);
                }
                self.log.push(Ev::WindowUpdate { sid: h.stream, inc });
            }
            kind::RST_STREAM => {
                let code = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
                if let Some(o) = self.outgoing.get_mut(&h.stream) {
                    o.done = true;
                }
                self.log.push(Ev::Rst {
                    sid: h.stream,
                    code,
                });
            }
            kind::PING => {
                let data: [u8; 8] = p.try_into().expect("PING length");
                if !h.has(flag::ACK) {
                    frame::write_ping(&mut self.out, true, data);
                }
                self.log.push(Ev::Ping {
                    ack: h.has(flag::ACK),
                    data,
                });
            }
            kind::GOAWAY => {
                let last = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
                let code = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
                self.log.push(Ev::Goaway { last, code });
            }
            k => panic!("{}: unexpected frame type {k}", self.name),
        }
    }

    fn on_block(&mut self, sid: u32, end: bool, block: Vec<u8>) {
        self.block_sizes.push(block.len());
        let d = self
            .dec
            .decode(&block, 1 << 20)
            .unwrap_or_else(|e| panic!("{}: HPACK error {e:?}", self.name));
        let init = self.recv_init;
        self.recv_streams.entry(sid).or_insert(init);
        let sinit = self.send_init;
        self.send_streams.entry(sid).or_insert(sinit);
        self.log.push(Ev::Headers {
            sid,
            fields: strs(&d.fields),
            end,
        });
    }

    // Queries over the log.

    fn headers_on(&self, sid: u32) -> Vec<(Vec<(String, String)>, bool)> {
        self.log
            .iter()
            .filter_map(|e| match e {
                Ev::Headers {
                    sid: s,
                    fields,
                    end,
                } if *s == sid => Some((fields.clone(), *end)),
                _ => None,
            })
            .collect()
    }

    fn body_on(&self, sid: u32) -> Vec<u8> {
        let mut v = Vec::new();
        for e in &self.log {
            if let Ev::Data { sid: s, data, .. } = e {
                if *s == sid {
                    v.extend_from_slice(data);
                }
            }
        }
        v
    }

    /// END_STREAM seen on `sid` (DATA or HEADERS).
    fn ended(&self, sid: u32) -> bool {
        self.log.iter().any(|e| match e {
            Ev::Data { sid: s, end, .. } | Ev::Headers { sid: s, end, .. } => *s == sid && *end,
            _ => false,
        })
    }

    fn rst_on(&self, sid: u32) -> Option<u32> {
        self.log.iter().find_map(|e| match e {
            Ev::Rst { sid: s, code } if *s == sid => Some(*code),
            _ => None,
        })
    }

    fn goaway(&self) -> Option<(u32, u32)> {
        self.log.iter().find_map(|e| match e {
            Ev::Goaway { last, code } => Some((*last, *code)),
            _ => None,
        })
    }

    fn stream_ids_with_headers(&self) -> Vec<u32> {
        let mut v: Vec<u32> = Vec::new();
        for e in &self.log {
            if let Ev::Headers { sid, .. } = e {
                if !v.contains(sid) {
                    v.push(*sid);
                }
            }
        }
        v
    }

    fn count(&self, f: impl Fn(&Ev) -> bool) -> usize {
        self.log.iter().filter(|e| f(e)).count()
    }
}

// ---------------------------------------------------------------------------------------------
// World: one mux, one initiator, N egress clients, bytes routed until quiet
// ---------------------------------------------------------------------------------------------

struct World {
    mux: Mux,
    tunnel: Peer,
    egress: BTreeMap<EgressId, Peer>,
    closed_egress: Vec<EgressId>,
    tunnel_closed: bool,
    events: Vec<MuxEvent>,
    /// Frames delivered to local legs, in order.
    local: Vec<(EgressId, u32, LocalFrame)>,
}

fn small_settings() -> MuxSettings {
    MuxSettings {
        max_concurrent_streams_per_egress: 100,
        initial_window: 65_535,
        max_buffered_bytes_per_stream: 65_535,
        max_frame_size: 16_384,
    }
}

impl World {
    fn new(settings: MuxSettings, tunnel_settings: &[(u16, u32)], tunnel_conn_extra: u32) -> World {
        let (mux, pre) = Mux::new(settings);
        let mut w = World {
            mux,
            tunnel: Peer::server(tunnel_settings, tunnel_conn_extra),
            egress: BTreeMap::new(),
            closed_egress: Vec::new(),
            tunnel_closed: false,
            events: Vec::new(),
            local: Vec::new(),
        };
        w.tunnel.feed(&pre);
        w.run();
        w
    }

    fn envoy() -> World {
        World::new(MuxSettings::default(), &ENVOY_SERVER_SETTINGS, 268_369_920)
    }

    fn attach_with(&mut self, id: EgressId, peer: Peer) {
        self.egress.insert(id, peer);
        let out = self.mux.attach(id);
        self.apply(out);
        self.run();
    }

    fn attach(&mut self, id: EgressId) {
        self.attach_with(
            id,
            Peer::client("egress", &ENVOY_CLIENT_SETTINGS, 268_369_920),
        );
    }

    fn e(&mut self, id: EgressId) -> &mut Peer {
        self.egress.get_mut(&id).expect("egress peer")
    }

    fn apply(&mut self, out: Output) {
        if !self.tunnel_closed {
            self.tunnel.feed(&out.tunnel_bytes());
        } else {
            assert!(out.to_tunnel.is_empty(), "bytes for a closed tunnel");
        }
        for (id, bytes) in &out.to_egress {
            assert!(
                !self.closed_egress.contains(id),
                "bytes for closed egress {id}"
            );
            self.egress
                .get_mut(id)
                .expect("bytes for unknown egress")
                .feed(bytes);
        }
        for id in &out.close_egress {
            assert!(!self.closed_egress.contains(id), "egress {id} closed twice");
            self.closed_egress.push(*id);
        }
        if out.close_tunnel {
            self.tunnel_closed = true;
        }
        self.local.extend(out.to_local);
        self.events.extend(out.events);
    }

    /// Routes bytes until nobody has anything to send.
    fn run(&mut self) {
        for _ in 0..100_000 {
            let mut progress = false;
            let t = self.tunnel.take();
            if !t.is_empty() && !self.tunnel_closed {
                let out = self.mux.on_tunnel_bytes(&t);
                self.apply(out);
                progress = true;
            }
            let ids: Vec<EgressId> = self.egress.keys().copied().collect();
            for id in ids {
                let b = self.e(id).take();
                if !b.is_empty() && !self.closed_egress.contains(&id) {
                    let out = self.mux.on_egress_bytes(id, &b);
                    self.apply(out);
                    progress = true;
                }
            }
            if !progress {
                return;
            }
        }
        panic!("no quiescence");
    }

    fn closed_events(&self) -> Vec<(EgressId, u32, Option<u32>, Option<u32>)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                MuxEvent::StreamClosed {
                    egress,
                    stream,
                    tunnel_stream,
                    reset,
                } => Some((*egress, *stream, *tunnel_stream, *reset)),
                _ => None,
            })
            .collect()
    }
}

fn get_request(path: &str) -> Vec<(&str, &str)> {
    vec![
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "127.0.0.1:19085"),
        (":path", path),
        ("user-agent", "curl/7.88.1"),
        ("accept", "*/*"),
        ("x-remote-node-id", "downstream-node"),
        ("x-forwarded-proto", "http"),
    ]
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn new_writes_preface_settings_and_window_update() {
    let (_mux, pre) = Mux::new(MuxSettings::default());
    assert_eq!(&pre[..24], frame::PREFACE);
    let mut t = Peer::server(&[], 0);
    t.feed(&pre);
    let Ev::Settings { ack: false, params } = &t.log[0] else {
        panic!("{:?}", t.log)
    };
    assert!(params.contains(&(setting::ENABLE_PUSH, 0)));
    assert!(params.contains(&(setting::INITIAL_WINDOW_SIZE, 1 << 20)));
    assert!(params.contains(&(setting::MAX_FRAME_SIZE, 16_384)));
    assert_eq!(
        t.log[1],
        Ev::WindowUpdate {
            sid: 0,
            inc: (1 << 20) - 65_535
        }
    );
}

#[test]
fn round_trip_one_egress() {
    let mut w = World::envoy();
    w.attach(1);
    assert!(w.e(1).log.iter().any(|e| matches!(e, Ev::Settings { ack: false, params } if params.contains(&(setting::MAX_CONCURRENT_STREAMS, 1024)))));
    assert!(w.e(1).log.contains(&Ev::Settings {
        ack: true,
        params: vec![]
    }));
    assert!(w.tunnel.log.contains(&Ev::Settings {
        ack: true,
        params: vec![]
    }));

    let req = get_request("/");
    w.e(1).headers(1, &req, true);
    w.run();
    assert_eq!(w.tunnel.headers_on(1), vec![(owned(&req), true)]);
    w.tunnel.headers(
        1,
        &[(":status", "200"), ("content-type", "text/plain")],
        false,
    );
    w.tunnel.data(
        1,
        b"hello from the local backend behind downstream-node\n",
        true,
    );
    w.run();
    assert_eq!(
        w.e(1).headers_on(1),
        vec![(
            owned(&[(":status", "200"), ("content-type", "text/plain")]),
            false
        )]
    );
    assert_eq!(
        w.e(1).body_on(1),
        b"hello from the local backend behind downstream-node\n"
    );
    assert!(w.e(1).ended(1));
    assert!(w.mux.is_idle());
    assert_eq!(w.mux.active_streams(), 0);
    assert_eq!(w.mux.egress_count(), 1);
    assert_eq!(w.closed_events(), vec![(1, 1, Some(1), None)]);
    assert!(w.events.contains(&MuxEvent::StreamOpened {
        egress: 1,
        stream: 1,
        tunnel_stream: 1
    }));
    // A second request on the same egress reuses the tunnel with the next stream id.
    w.e(1).headers(3, &get_request("/two"), true);
    w.run();
    assert_eq!(w.tunnel.stream_ids_with_headers(), vec![1, 3]);
    assert!(w.mux.can_accept_egress());
}

#[test]
fn two_egresses_interleaved_map_ids_and_share_hpack_state() {
    let mut w = World::envoy();
    w.attach(10);
    w.attach(20);
    // Interleave: A1, B1, A3, B3.
    let order = [(10u64, 1u32), (20, 1), (10, 3), (20, 3)];
    for (i, &(e, sid)) in order.iter().enumerate() {
        let path = format!("/e{e}/s{sid}");
        let mut req = get_request(&path);
        let tag = format!("{i}");
        req.push(("x-tag", &tag));
        w.e(e).headers(sid, &req, true);
        w.run();
    }
    // Tunnel ids follow arrival order.
    assert_eq!(w.tunnel.stream_ids_with_headers(), vec![1, 3, 5, 7]);
    for (i, &(e, sid)) in order.iter().enumerate() {
        let tsid = 1 + 2 * i as u32;
        let h = &w.tunnel.headers_on(tsid)[0].0;
        assert!(h.contains(&(":path".to_string(), format!("/e{e}/s{sid}"))));
        assert!(w.events.contains(&MuxEvent::StreamOpened {
            egress: e,
            stream: sid,
            tunnel_stream: tsid
        }));
    }
    // Respond in reverse order with identical headers (the initiator's encoder indexes them, so the
    // later blocks are dynamic-table references).
    for i in (0..4u32).rev() {
        let tsid = 1 + 2 * i;
        w.tunnel.headers(
            tsid,
            &[
                (":status", "200"),
                ("server", "envoy"),
                ("x-served-by", "node-a"),
            ],
            false,
        );
        w.tunnel.data(tsid, format!("body-{tsid}").as_bytes(), true);
    }
    w.run();
    for (i, &(e, sid)) in order.iter().enumerate() {
        let tsid = 1 + 2 * i as u32;
        let p = &w.egress[&e];
        assert_eq!(
            p.headers_on(sid)[0].0,
            owned(&[
                (":status", "200"),
                ("server", "envoy"),
                ("x-served-by", "node-a")
            ])
        );
        assert_eq!(p.body_on(sid), format!("body-{tsid}").as_bytes());
        assert!(p.ended(sid));
    }
    // HPACK dynamic tables were used on every leg and direction.
    assert!(
        w.tunnel.dec.table_len() > 0,
        "mux -> tunnel encoder indexed nothing"
    );
    assert!(w.egress[&10].dec.table_len() > 0 && w.egress[&20].dec.table_len() > 0);
    // The egress clients' second requests (dynamic-table hits) were much smaller than their first.
    let tb = &w.tunnel.block_sizes;
    assert!(tb[2] < tb[0], "tunnel blocks {tb:?}");
    let eb = &w.egress[&10].block_sizes;
    assert!(eb[1] < eb[0], "egress blocks {eb:?}");
    assert!(w.mux.is_idle());
    assert_eq!(w.closed_events().len(), 4);
}

#[test]
fn large_bodies_respect_windows_both_ways() {
    // Small windows everywhere: the tunnel advertises 16 KiB stream windows and the default
    // connection window; the egress advertises 10,000-byte stream windows.
    let mut w = World::new(
        small_settings(),
        &[(setting::INITIAL_WINDOW_SIZE, 16_384)],
        0,
    );
    w.attach_with(
        1,
        Peer::client("egress", &[(setting::INITIAL_WINDOW_SIZE, 10_000)], 0),
    );
    let up: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let down: Vec<u8> = (0..250_000u32).map(|i| (i * 13 % 253) as u8).collect();
    w.e(1).headers(
        1,
        &[
            (":method", "POST"),
            (":path", "/upload"),
            (":scheme", "http"),
            (":authority", "x"),
        ],
        false,
    );
    w.e(1).data(1, &up, true);
    w.run();
    assert_eq!(w.tunnel.body_on(1), up);
    assert!(w.tunnel.ended(1));
    w.tunnel.headers(1, &[(":status", "200")], false);
    w.tunnel.data(1, &down, true);
    w.run();
    assert_eq!(w.e(1).body_on(1), down);
    assert!(w.e(1).ended(1));
    // Frames never exceeded 16 KiB (the peers' readers would have panicked) and windows held
    // (the peers assert on every DATA frame).
    assert!(w.mux.is_idle());
    assert_eq!(w.mux.buffered_bytes(), 0);
}

#[test]
fn data_is_buffered_until_the_tunnel_opens_its_window() {
    let mut w = World::new(
        small_settings(),
        &[(setting::INITIAL_WINDOW_SIZE, 16_384)],
        0,
    );
    w.tunnel.auto_credit = false;
    w.attach_with(1, Peer::client("egress", &[], 0));
    w.e(1).headers(
        1,
        &[
            (":method", "POST"),
            (":path", "/"),
            (":scheme", "http"),
            (":authority", "x"),
        ],
        false,
    );
    let body: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    w.e(1).data(1, &body, true);
    w.run();
    // The egress could send one stream window (65,535); the tunnel took 16,384.
    assert_eq!(w.tunnel.body_on(1).len(), 16_384);
    assert_eq!(w.mux.buffered_bytes(), 65_535 - 16_384);
    // Not enough forwarded yet for a stream WINDOW_UPDATE (threshold: half a window). The
    // connection was credited early: less than one connection window is queued on that leg.
    assert_eq!(
        w.e(1)
            .count(|e| matches!(e, Ev::WindowUpdate { sid: 1, .. })),
        0
    );
    let conn_credit: u32 = w
        .e(1)
        .log
        .iter()
        .map(|e| {
            if let Ev::WindowUpdate { sid: 0, inc } = e {
                *inc
            } else {
                0
            }
        })
        .sum();
    assert_eq!(conn_credit, 65_535);
    // The initiator opens its windows: another 16,384 go through, 32,768 have been forwarded, and
    // the egress is credited exactly that on its stream and connection.
    w.tunnel.window_update(0, 16_384);
    w.tunnel.window_update(1, 16_384);
    w.run();
    assert_eq!(w.tunnel.body_on(1).len(), 32_768);
    assert!(w.e(1).log.contains(&Ev::WindowUpdate {
        sid: 1,
        inc: 32_768
    }));
    // Which let the egress send 32,768 more: the buffer now holds exactly one advertised stream
    // window, never more.
    assert_eq!(w.mux.buffered_bytes(), 65_535);
    // Release everything.
    w.tunnel.auto_credit = true;
    w.tunnel.window_update(0, 1_000_000);
    w.tunnel.window_update(1, 1_000_000);
    w.run();
    assert_eq!(w.tunnel.body_on(1), body);
    assert!(w.tunnel.ended(1));
    w.tunnel.headers(1, &[(":status", "204")], true);
    w.run();
    assert!(w.mux.is_idle());
}

#[test]
fn connection_windows_are_shared_between_streams() {
    // Big stream windows, default (65,535) connection windows, no automatic credit: the
    // connection window is the binding limit, in both directions.
    let mut w = World::new(
        small_settings(),
        &[(setting::INITIAL_WINDOW_SIZE, 1 << 20)],
        0,
    );
    w.tunnel.auto_credit = false;
    let mut c = Peer::client("egress", &[(setting::INITIAL_WINDOW_SIZE, 1 << 20)], 0);
    c.auto_credit = false;
    w.attach_with(1, c);
    for sid in [1, 3] {
        w.e(1).headers(
            sid,
            &[
                (":method", "POST"),
                (":path", "/"),
                (":scheme", "http"),
                (":authority", "x"),
            ],
            false,
        );
        w.e(1).data(sid, &[sid as u8; 50_000], true);
    }
    w.run();
    let sent = w.tunnel.body_on(1).len() + w.tunnel.body_on(3).len();
    assert_eq!(sent, 65_535);
    w.tunnel.window_update(0, 50_000);
    w.run();
    assert_eq!(
        w.tunnel.body_on(1).len() + w.tunnel.body_on(3).len(),
        100_000
    );
    assert_eq!(w.tunnel.body_on(3), vec![3u8; 50_000]);
    // Responses: 2 x 50,000 toward an egress with a 65,535-byte connection window.
    for tsid in [1, 3] {
        w.tunnel.headers(tsid, &[(":status", "200")], false);
        w.tunnel.send_conn = 1 << 30;
        w.tunnel.data(tsid, &[tsid as u8 + 10; 50_000], true);
    }
    w.run();
    assert_eq!(w.e(1).body_on(1).len() + w.e(1).body_on(3).len(), 65_535);
    w.e(1).window_update(0, 50_000);
    w.run();
    assert_eq!(w.e(1).body_on(1), vec![11u8; 50_000]);
    assert_eq!(w.e(1).body_on(3), vec![13u8; 50_000]);
    assert!(w.mux.is_idle());
}

#[test]
fn peers_that_overrun_windows_get_flow_control_errors() {
    // The initiator's stream windows are 0: nothing is forwarded, so nothing is credited.
    let mut w = World::new(small_settings(), &[(setting::INITIAL_WINDOW_SIZE, 0)], 0);
    w.attach_with(1, Peer::client("egress", &[], 0));
    // Stream level: the egress pretends its stream window is bigger than the 65,535 advertised.
    w.e(1).send_init = 1 << 20;
    w.e(1).send_conn = 1 << 20;
    w.e(1).headers(
        1,
        &[
            (":method", "POST"),
            (":path", "/"),
            (":scheme", "http"),
            (":authority", "x"),
        ],
        false,
    );
    w.e(1).window_update(0, 1_000_000);
    w.e(1).data(1, &[0u8; 70_000], false);
    w.run();
    assert_eq!(w.e(1).rst_on(1), Some(error::FLOW_CONTROL_ERROR));
    assert_eq!(w.tunnel.rst_on(1), Some(error::CANCEL));
    assert!(w.closed_egress.is_empty());
    // Connection level: 4 streams x 60,000 (each within its stream window). The mux credits the
    // egress connection early for at most one connection window of queued data, so the egress
    // may send at most 2 x 65,535 bytes; the rest overruns its connection window.
    w.attach_with(2, Peer::client("egress2", &[], 0));
    w.e(2).send_conn = 1 << 20;
    for sid in [1, 3, 5, 7] {
        w.e(2).headers(
            sid,
            &[
                (":method", "POST"),
                (":path", "/"),
                (":scheme", "http"),
                (":authority", "x"),
            ],
            false,
        );
        w.e(2).data(sid, &[0u8; 60_000], false);
    }
    w.run();
    assert_eq!(
        w.e(2).goaway().map(|g| g.1),
        Some(error::FLOW_CONTROL_ERROR)
    );
    assert!(w.closed_egress.contains(&2));
    assert!(!w.tunnel_closed);
}

#[test]
fn grpc_trailers_both_ways_even_behind_buffered_data() {
    let mut w = World::new(small_settings(), &[], 0);
    // The egress gives only 1,000 bytes per stream, so the response body is buffered when the
    // trailers arrive.
    let mut c = Peer::client("egress", &[(setting::INITIAL_WINDOW_SIZE, 1_000)], 0);
    c.auto_credit = false;
    w.attach_with(1, c);
    let req = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/pkg.Svc/Call"),
        (":authority", "x"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ];
    w.e(1).headers(1, &req, false);
    w.e(1).data(1, b"\x00\x00\x00\x00\x05hello", false);
    w.e(1).trailers(1, &[("x-client-trailer", "1")]);
    w.run();
    assert_eq!(w.tunnel.body_on(1), b"\x00\x00\x00\x00\x05hello");
    let th = w.tunnel.headers_on(1);
    assert_eq!(th.len(), 2);
    assert_eq!(th[1], (owned(&[("x-client-trailer", "1")]), true));

    let body = vec![7u8; 5_000];
    w.tunnel.headers(
        1,
        &[(":status", "200"), ("content-type", "application/grpc")],
        false,
    );
    w.tunnel.data(1, &body, false);
    w.tunnel
        .trailers(1, &[("grpc-status", "0"), ("grpc-message", "")]);
    w.run();
    assert_eq!(w.e(1).body_on(1).len(), 1_000);
    assert_eq!(
        w.e(1).headers_on(1).len(),
        1,
        "trailers must wait behind the buffered body"
    );
    w.e(1).auto_credit = true;
    w.e(1).window_update(0, 100_000);
    w.e(1).window_update(1, 100_000);
    w.run();
    assert_eq!(w.e(1).body_on(1), body);
    let eh = w.e(1).headers_on(1);
    assert_eq!(eh.len(), 2);
    assert_eq!(
        eh[1],
        (owned(&[("grpc-status", "0"), ("grpc-message", "")]), true)
    );
    assert!(w.mux.is_idle());
    assert_eq!(w.closed_events(), vec![(1, 1, Some(1), None)]);
}

#[test]
fn interim_100_continue_then_final_response() {
    let mut w = World::envoy();
    w.attach(1);
    w.e(1).headers(
        1,
        &[
            (":method", "POST"),
            (":path", "/"),
            (":scheme", "http"),
            (":authority", "x"),
            ("expect", "100-continue"),
        ],
        false,
    );
    w.run();
    w.tunnel.headers(1, &[(":status", "100")], false);
    w.run();
    w.e(1).data(1, b"payload", true);
    w.run();
    w.tunnel.headers(1, &[(":status", "201")], true);
    w.run();
    let eh = w.e(1).headers_on(1);
    assert_eq!(
        eh,
        vec![
            (owned(&[(":status", "100")]), false),
            (owned(&[(":status", "201")]), true)
        ]
    );
    assert_eq!(w.tunnel.body_on(1), b"payload");
    assert!(w.mux.is_idle());
}

#[test]
fn trailers_without_end_stream_reset_the_stream() {
    let mut w = World::envoy();
    w.attach(1);
    w.e(1).headers(1, &get_request("/"), true);
    w.run();
    w.tunnel.headers(1, &[(":status", "200")], false);
    w.tunnel.data(1, b"x", false);
    w.tunnel.headers(1, &[("bad", "trailer")], false);
    w.run();
    assert_eq!(w.tunnel.rst_on(1), Some(error::PROTOCOL_ERROR));
    assert_eq!(w.e(1).rst_on(1), Some(error::INTERNAL_ERROR));
    assert!(w.mux.is_idle());
    assert!(!w.tunnel_closed);
}

#[test]
fn rst_from_egress_is_mapped_to_the_tunnel() {
    let mut w = World::envoy();
    w.attach(1);
    w.attach(2);
    w.e(2).headers(1, &get_request("/other"), true); // tunnel 1
    w.e(1).headers(1, &get_request("/a"), false);
    w.run();
    let t_for_e1 = w
        .events
        .iter()
        .find_map(|e| match e {
            MuxEvent::StreamOpened {
                egress: 1,
                stream: 1,
                tunnel_stream,
            } => Some(*tunnel_stream),
            _ => None,
        })
        .unwrap();
    w.e(1).rst(1, error::CANCEL);
    w.run();
    assert_eq!(w.tunnel.rst_on(t_for_e1), Some(error::CANCEL));
    // Late frames from the initiator for the reset stream are dropped, but still count against
    // (and are credited back to) the connection window.
    w.tunnel.headers(t_for_e1, &[(":status", "200")], false);
    w.tunnel.data(t_for_e1, &[1u8; 40_000], true);
    w.run();
    assert!(w.e(1).headers_on(1).is_empty());
    assert!(w
        .tunnel
        .log
        .iter()
        .any(|e| matches!(e, Ev::WindowUpdate { sid: 0, .. })));
    assert!(!w.tunnel_closed);
    // The other egress's stream is untouched.
    let other = 4 - t_for_e1;
    w.tunnel.headers(other, &[(":status", "200")], true);
    w.run();
    assert_eq!(w.e(2).headers_on(1).len(), 1);
    assert!(w.mux.is_idle());
    assert!(w
        .closed_events()
        .contains(&(1, 1, Some(t_for_e1), Some(error::CANCEL))));
}

#[test]
fn rst_from_tunnel_is_mapped_to_the_egress() {
    let mut w = World::envoy();
    w.attach(1);
    w.e(1).headers(5, &get_request("/a"), true);
    w.run();
    w.tunnel.rst(1, error::REFUSED_STREAM);
    w.run();
    assert_eq!(w.e(1).rst_on(5), Some(error::REFUSED_STREAM));
    assert!(w.mux.is_idle());
    assert_eq!(
        w.closed_events(),
        vec![(1, 5, Some(1), Some(error::REFUSED_STREAM))]
    );
}

#[test]
fn rst_no_error_after_complete_response_delivers_the_response_first() {
    let mut w = World::new(small_settings(), &[], 0);
    let mut c = Peer::client("egress", &[(setting::INITIAL_WINDOW_SIZE, 100)], 0);
    c.auto_credit = false;
    w.attach_with(1, c);
    w.e(1).headers(
        1,
        &[
            (":method", "POST"),
            (":path", "/"),
            (":scheme", "http"),
            (":authority", "x"),
        ],
        false,
    );
    w.e(1).data(1, b"partial upload", false);
    w.run();
    // Early complete response, then RST(NO_ERROR) to stop the upload (RFC 9113 §8.1).
    w.tunnel.headers(1, &[(":status", "413")], false);
    w.tunnel.data(1, &[b'z'; 300], true);
    w.tunnel.rst(1, error::NO_ERROR);
    w.run();
    assert_eq!(w.e(1).body_on(1).len(), 100);
    assert_eq!(w.e(1).rst_on(1), None);
    w.e(1).window_update(0, 1000);
    w.e(1).window_update(1, 1000);
    w.run();
    assert_eq!(w.e(1).body_on(1), vec![b'z'; 300]);
    assert!(w.e(1).ended(1));
    assert_eq!(w.e(1).rst_on(1), Some(error::NO_ERROR));
    assert!(w.mux.is_idle());
}

#[test]
fn settings_and_ping_are_handled_locally() {
    let mut w = World::envoy();
    w.attach(1);
    let tunnel_before = w.tunnel.log.len();
    w.e(1).out.clear();
    frame::write_ping(&mut w.e(1).out, false, *b"egress!!");
    w.e(1).settings(&[(setting::INITIAL_WINDOW_SIZE, 1000)]);
    w.run();
    assert!(w.e(1).log.contains(&Ev::Ping {
        ack: true,
        data: *b"egress!!"
    }));
    assert_eq!(
        w.tunnel.log.len(),
        tunnel_before,
        "nothing reaches the tunnel"
    );
    // Initiator PING: answered by the mux, nothing to the egress.
    let egress_before = w.e(1).log.len();
    frame::write_ping(&mut w.tunnel.out, false, *b"tunnel!!");
    w.run();
    assert!(w.tunnel.log.contains(&Ev::Ping {
        ack: true,
        data: *b"tunnel!!"
    }));
    assert_eq!(w.e(1).log.len(), egress_before);
    // Our own keepalive PING on the tunnel.
    let out = w.mux.ping_tunnel(*b"keepaliv");
    w.apply(out);
    w.run();
    assert!(w.events.contains(&MuxEvent::TunnelPingAck {
        opaque: *b"keepaliv"
    }));
}

#[test]
fn tunnel_header_table_size_change_is_honoured() {
    let mut w = World::envoy();
    w.attach(1);
    w.e(1).headers(1, &get_request("/one"), true);
    w.run();
    assert!(w.tunnel.dec.table_len() > 0);
    // The initiator shrinks its decoder table to 0: the next block must start with a size update
    // (the test decoder rejects it otherwise) and use no dynamic entries.
    w.tunnel.settings(&[(setting::HEADER_TABLE_SIZE, 0)]);
    w.run();
    w.e(1).headers(3, &get_request("/two"), true);
    w.run();
    assert_eq!(w.tunnel.headers_on(3)[0].0, owned(&get_request("/two")));
    assert_eq!(w.tunnel.dec.table_len(), 0);
}

#[test]
fn tunnel_initial_window_change_adjusts_open_streams() {
    let mut w = World::new(small_settings(), &[], 0);
    w.tunnel.auto_credit = false;
    w.attach_with(1, Peer::client("egress", &[], 0));
    w.e(1).headers(
        1,
        &[
            (":method", "POST"),
            (":path", "/"),
            (":scheme", "http"),
            (":authority", "x"),
        ],
        false,
    );
    w.e(1).data(1, &[3u8; 60_000], false);
    w.run();
    assert_eq!(w.tunnel.body_on(1).len(), 60_000);
    // Shrink to 1,000: the stream's window is now 1,000 - 60,000 < 0; nothing more goes out.
    w.tunnel.settings(&[(setting::INITIAL_WINDOW_SIZE, 1_000)]);
    w.run();
    w.e(1).data(1, &[4u8; 5_000], false);
    w.run();
    assert_eq!(w.tunnel.body_on(1).len(), 60_000);
    // Grow to 70,000: the stream window becomes 10,000; the 5,000 queued bytes go out.
    w.tunnel.settings(&[(setting::INITIAL_WINDOW_SIZE, 70_000)]);
    w.run();
    assert_eq!(w.tunnel.body_on(1).len(), 65_000);
    // 10,000 more: the connection window (65,535 in total) stops them at 65,535.
    w.e(1).data(1, &[5u8; 10_000], false);
    w.run();
    assert_eq!(w.tunnel.body_on(1).len(), 65_535);
    // Connection credit: now the stream window (70,000 in total) is the limit.
    w.tunnel.window_update(0, 100_000);
    w.run();
    assert_eq!(w.tunnel.body_on(1).len(), 70_000);
    assert_eq!(
        w.mux.buffered_bytes(),
        5_000 + 10_000 - 10_000 + 5_000 - 5_000
    );
}

#[test]
fn tunnel_goaway_refuses_later_streams_and_drains() {
    let mut w = World::envoy();
    w.attach(1);
    w.attach(2);
    w.e(1).headers(1, &get_request("/a"), true); // tunnel 1
    w.run();
    w.e(2).headers(1, &get_request("/b"), true); // tunnel 3
    w.run();
    w.e(1).headers(3, &get_request("/c"), true); // tunnel 5
    w.run();
    let mut g = Vec::new();
    frame::write_goaway(&mut g, 1, error::NO_ERROR, b"");
    w.tunnel.out.extend_from_slice(&g);
    w.run();
    assert!(w.events.contains(&MuxEvent::TunnelGoaway {
        last_stream_id: 1,
        error_code: 0
    }));
    assert_eq!(w.e(2).rst_on(1), Some(error::REFUSED_STREAM));
    assert_eq!(w.e(1).rst_on(3), Some(error::REFUSED_STREAM));
    assert_eq!(w.e(1).rst_on(1), None);
    assert_eq!(w.e(1).goaway(), Some((3, error::NO_ERROR)));
    assert_eq!(w.e(2).goaway(), Some((1, error::NO_ERROR)));
    assert!(!w.mux.can_accept_egress());
    // New streams are refused.
    w.e(2).headers(3, &get_request("/late"), true);
    w.run();
    assert_eq!(w.e(2).rst_on(3), Some(error::REFUSED_STREAM));
    assert_eq!(w.tunnel.stream_ids_with_headers(), vec![1, 3, 5]);
    // Stream 1 completes; then the mux closes everything.
    assert!(!w.tunnel_closed);
    w.tunnel.headers(1, &[(":status", "200")], true);
    w.run();
    assert!(w.e(1).ended(1));
    assert!(w.tunnel_closed);
    assert_eq!(w.closed_egress.len(), 2);
    assert!(w.mux.is_closed());
}

#[test]
fn tunnel_max_concurrent_streams_queues_egress_streams() {
    let mut w = World::new(small_settings(), &[(setting::MAX_CONCURRENT_STREAMS, 1)], 0);
    w.attach_with(1, Peer::client("a", &[], 0));
    w.attach_with(2, Peer::client("b", &[], 0));
    w.e(1).headers(1, &get_request("/a"), false);
    w.e(1).data(1, b"queued-not", true);
    w.run();
    w.e(2).headers(1, &get_request("/b"), false);
    w.e(2).data(1, b"queued body", true);
    w.run();
    assert_eq!(w.tunnel.stream_ids_with_headers(), vec![1]);
    assert_eq!(w.mux.pending_streams(), 1);
    assert_eq!(w.mux.active_streams(), 2);
    w.tunnel.headers(1, &[(":status", "200")], true);
    w.run();
    assert_eq!(w.tunnel.stream_ids_with_headers(), vec![1, 3]);
    assert_eq!(w.tunnel.body_on(3), b"queued body");
    assert!(w.tunnel.ended(3));
    w.tunnel.headers(3, &[(":status", "200")], true);
    w.run();
    assert!(w.e(2).ended(1));
    assert!(w.mux.is_idle());
}

#[test]
fn tunnel_stream_ids_exhausted_drains_the_mux() {
    let mut w = World::envoy();
    w.attach(1);
    w.mux.tunnel.next_sid = u64::from(frame::MAX_STREAM_ID) - 2;
    w.e(1).headers(1, &get_request("/a"), true);
    w.e(1).headers(3, &get_request("/b"), true);
    w.run();
    assert_eq!(
        w.tunnel.stream_ids_with_headers(),
        vec![0x7fff_fffd, 0x7fff_ffff]
    );
    assert!(!w.mux.can_accept_egress());
    w.e(1).headers(5, &get_request("/c"), true);
    w.run();
    assert_eq!(w.e(1).rst_on(5), Some(error::REFUSED_STREAM));
    assert_eq!(w.e(1).goaway(), Some((5, error::NO_ERROR)));
    for t in [0x7fff_fffd, 0x7fff_ffff] {
        w.tunnel.headers(t, &[(":status", "200")], true);
    }
    w.run();
    assert!(w.e(1).ended(1) && w.e(1).ended(3));
    assert!(w.tunnel_closed);
    assert_eq!(w.closed_egress, vec![1]);
}

#[test]
fn egress_stream_limit_refuses_extra_streams() {
    let mut s = small_settings();
    s.max_concurrent_streams_per_egress = 2;
    let mut w = World::new(s, &[], 0);
    w.attach(1);
    for sid in [1, 3, 5] {
        w.e(1).headers(sid, &get_request("/"), true);
    }
    w.run();
    assert_eq!(w.e(1).rst_on(5), Some(error::REFUSED_STREAM));
    assert_eq!(w.tunnel.stream_ids_with_headers(), vec![1, 3]);
}

#[test]
fn malformed_egress_frame_closes_only_that_egress() {
    let mut w = World::envoy();
    w.attach(1);
    w.attach(2);
    w.e(1).headers(1, &get_request("/good"), true); // tunnel 1
    w.run();
    w.e(2).headers(1, &get_request("/bad"), false); // tunnel 3
    w.run();
    // WINDOW_UPDATE with a 3-byte payload: FRAME_SIZE_ERROR, a connection error.
    frame::write_frame(&mut w.e(2).out, kind::WINDOW_UPDATE, 0, 0, &[0, 0, 1]);
    w.run();
    assert_eq!(w.e(2).goaway(), Some((1, error::FRAME_SIZE_ERROR)));
    assert_eq!(w.closed_egress, vec![2]);
    assert_eq!(w.tunnel.rst_on(3), Some(error::CANCEL));
    assert!(w.events.iter().any(|e| matches!(
        e,
        MuxEvent::ProtocolError {
            leg: Leg::Egress(2),
            ..
        }
    )));
    assert!(!w.tunnel_closed);
    assert_eq!(w.mux.egress_count(), 1);
    w.tunnel.headers(1, &[(":status", "200")], false);
    w.tunnel.data(1, b"ok", true);
    w.run();
    assert_eq!(w.e(1).body_on(1), b"ok");
    assert!(w.mux.is_idle());
    // Later bytes from the closed egress are ignored.
    assert!(w.mux.on_egress_bytes(2, b"garbage").is_empty());
}

#[test]
fn bad_egress_preface_and_early_frames_are_connection_errors() {
    let mut w = World::envoy();
    w.attach_with(1, Peer::new("raw", false, IndexPolicy::None));
    w.e(1)
        .out
        .extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    w.run();
    assert_eq!(w.e(1).goaway(), Some((0, error::PROTOCOL_ERROR)));
    assert_eq!(w.closed_egress, vec![1]);
    // Preface followed by something other than SETTINGS.
    w.attach_with(2, Peer::new("raw", false, IndexPolicy::None));
    w.e(2).out.extend_from_slice(frame::PREFACE);
    frame::write_ping(&mut w.e(2).out, false, [0; 8]);
    w.run();
    assert_eq!(w.e(2).goaway(), Some((0, error::PROTOCOL_ERROR)));
    assert!(!w.tunnel_closed);
}

#[test]
fn interrupted_continuation_is_a_connection_error() {
    let mut w = World::envoy();
    w.attach(1);
    let mut block = Vec::new();
    w.e(1).enc.encode(&hf(&get_request("/")), &mut block);
    let (a, _) = block.split_at(5);
    frame::write_frame(&mut w.e(1).out, kind::HEADERS, flag::END_STREAM, 1, a);
    frame::write_ping(&mut w.e(1).out, false, [0; 8]);
    w.run();
    assert_eq!(w.e(1).goaway().map(|g| g.1), Some(error::PROTOCOL_ERROR));
    assert_eq!(w.closed_egress, vec![1]);
}

#[test]
fn big_headers_use_continuation_on_both_legs() {
    let mut w = World::envoy();
    w.attach(1);
    let big: String = "v".repeat(20_000);
    let mut req = get_request("/big");
    req.push(("x-big", &big));
    w.e(1).headers(1, &req, true);
    w.run();
    assert_eq!(w.tunnel.headers_on(1), vec![(owned(&req), true)]);
    w.tunnel
        .headers(1, &[(":status", "200"), ("x-big-resp", &big)], true);
    w.run();
    assert_eq!(
        w.e(1).headers_on(1)[0].0,
        owned(&[(":status", "200"), ("x-big-resp", &big)])
    );
    assert!(w.mux.is_idle());
}

#[test]
fn oversized_header_list_resets_only_the_stream() {
    let mut w = World::envoy();
    w.attach(1);
    let big: String = "v".repeat(40_000);
    let mut req = get_request("/big");
    req.push(("x-big-1", &big));
    req.push(("x-big-2", &big));
    w.e(1).headers(1, &req, true);
    w.run();
    assert_eq!(w.e(1).rst_on(1), Some(error::PROTOCOL_ERROR));
    assert!(w.tunnel.stream_ids_with_headers().is_empty());
    // HPACK state is intact: the next request (sharing dynamic entries) works.
    w.e(1).headers(3, &get_request("/small"), true);
    w.run();
    assert_eq!(w.tunnel.headers_on(1)[0].0, owned(&get_request("/small")));
    assert!(w.closed_egress.is_empty());
}

#[test]
fn padding_and_priority_are_stripped() {
    let mut w = World::envoy();
    w.attach(1);
    let mut block = Vec::new();
    w.e(1).enc.encode(
        &hf(&[
            (":method", "POST"),
            (":path", "/"),
            (":scheme", "http"),
            (":authority", "x"),
        ]),
        &mut block,
    );
    // HEADERS with PADDED|PRIORITY: pad length, 5 priority bytes, block, padding.
    let mut p = vec![3u8, 0, 0, 0, 0, 15];
    p.extend_from_slice(&block);
    p.extend_from_slice(&[0, 0, 0]);
    frame::write_frame(
        &mut w.e(1).out,
        kind::HEADERS,
        flag::END_HEADERS | flag::PADDED | flag::PRIORITY,
        1,
        &p,
    );
    // PRIORITY frame: dropped.
    frame::write_frame(&mut w.e(1).out, kind::PRIORITY, 0, 1, &[0, 0, 0, 0, 7]);
    // DATA with 10 bytes of padding.
    let mut d = vec![10u8];
    d.extend_from_slice(b"abc");
    d.extend_from_slice(&[0; 10]);
    frame::write_frame(
        &mut w.e(1).out,
        kind::DATA,
        flag::PADDED | flag::END_STREAM,
        1,
        &d,
    );
    w.run();
    assert_eq!(w.tunnel.headers_on(1).len(), 1);
    assert_eq!(w.tunnel.body_on(1), b"abc");
    assert!(w.tunnel.ended(1));
    // Padding counts against flow control but is never queued.
    assert_eq!(w.mux.buffered_bytes(), 0);
    assert!(w.mux.is_idle() || w.mux.active_streams() == 1);
}

#[test]
fn detach_resets_streams_on_the_tunnel() {
    let mut w = World::envoy();
    w.attach(1);
    w.e(1).headers(1, &get_request("/a"), true);
    w.e(1).headers(3, &get_request("/b"), false);
    w.run();
    let out = w.mux.detach(1);
    w.egress.remove(&1);
    w.apply(out);
    w.run();
    assert_eq!(w.tunnel.rst_on(1), Some(error::CANCEL));
    assert_eq!(w.tunnel.rst_on(3), Some(error::CANCEL));
    assert!(w.mux.is_idle());
    assert_eq!(w.mux.egress_count(), 0);
    assert_eq!(w.closed_events().len(), 2);
    // Late response frames for the reset streams are ignored.
    w.tunnel.headers(1, &[(":status", "200")], true);
    w.run();
    assert!(!w.tunnel_closed);
}

#[test]
fn tunnel_protocol_error_closes_everything() {
    let mut w = World::envoy();
    w.attach(1);
    w.attach(2);
    w.e(1).headers(1, &get_request("/a"), true);
    w.e(2).headers(1, &get_request("/b"), true);
    w.run();
    frame::write_frame(
        &mut w.tunnel.out,
        kind::PUSH_PROMISE,
        flag::END_HEADERS,
        1,
        &[0, 0, 0, 2, 0x82],
    );
    w.run();
    assert!(w.tunnel_closed);
    assert_eq!(w.tunnel.goaway().map(|g| g.1), Some(error::PROTOCOL_ERROR));
    assert_eq!(w.closed_egress.len(), 2);
    assert_eq!(w.e(1).rst_on(1), Some(error::INTERNAL_ERROR));
    assert!(w.e(2).goaway().is_some());
    assert!(!w.mux.can_accept_egress());
    assert_eq!(w.mux.active_streams(), 0);
    assert!(w.mux.on_tunnel_bytes(b"more").is_empty());
}

#[test]
fn tunnel_closed_closes_every_egress() {
    let mut w = World::envoy();
    w.attach(1);
    w.attach(2);
    w.e(1).headers(1, &get_request("/a"), true);
    w.run();
    let out = w.mux.on_tunnel_closed();
    assert!(!out.close_tunnel);
    assert!(out.to_tunnel.is_empty());
    w.tunnel_closed = true;
    w.apply(out);
    assert_eq!(w.closed_egress, vec![1, 2]);
    assert_eq!(w.e(1).rst_on(1), Some(error::INTERNAL_ERROR));
    assert_eq!(w.e(2).goaway(), Some((0, error::NO_ERROR)));
    assert!(!w.mux.can_accept_egress());
    assert_eq!(w.mux.attach(3).close_egress, vec![3]);
}

#[test]
fn many_streams_leave_no_state_behind() {
    let mut w = World::envoy();
    for e in 1..=3u64 {
        w.attach(e);
    }
    let mut tsid = 1u32;
    for round in 0..20u32 {
        for e in 1..=3u64 {
            let sid = 1 + 2 * round;
            w.e(e)
                .headers(sid, &get_request(&format!("/{e}/{round}")), false);
            w.e(e)
                .data(sid, format!("req {e} {round}").as_bytes(), true);
            w.run();
            match round % 4 {
                0 => {
                    w.tunnel.headers(tsid, &[(":status", "200")], false);
                    w.tunnel.data(tsid, b"fine", true);
                }
                1 => w.tunnel.rst(tsid, error::INTERNAL_ERROR),
                2 => {
                    w.e(e).rst(sid, error::CANCEL);
                }
                _ => {
                    w.tunnel.headers(tsid, &[(":status", "200")], false);
                    w.tunnel.trailers(tsid, &[("grpc-status", "0")]);
                }
            }
            w.run();
            tsid += 2;
        }
    }
    assert!(w.mux.is_idle());
    assert_eq!(w.mux.buffered_bytes(), 0);
    assert_eq!(w.closed_events().len(), 60);
}

#[test]
fn frames_on_stream_zero_and_idle_streams_are_rejected() {
    let mut w = World::envoy();
    w.attach(1);
    frame::write_data(&mut w.e(1).out, 0, false, b"x");
    w.run();
    assert_eq!(w.e(1).goaway().map(|g| g.1), Some(error::PROTOCOL_ERROR));
    // Tunnel HEADERS on a stream we never opened.
    frame::write_frame(
        &mut w.tunnel.out,
        kind::HEADERS,
        flag::END_HEADERS,
        9,
        &[0x88],
    );
    w.run();
    assert!(w.tunnel_closed);
}

// ---------------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------------

/// A mux with the initiator's SETTINGS and two egresses each with one open stream, plus their
/// peers' byte streams discarded. Returns the mux.
fn primed_mux() -> Mux {
    let (mut mux, _pre) = Mux::new(small_settings());
    let mut t = Vec::new();
    frame::write_settings(&mut t, &ENVOY_SERVER_SETTINGS);
    frame::write_settings_ack(&mut t);
    let _ = mux.on_tunnel_bytes(&t);
    for e in [1u64, 2] {
        let _ = mux.attach(e);
        let mut c = Peer::client("e", &ENVOY_CLIENT_SETTINGS, 0);
        c.headers(1, &get_request("/p"), false);
        let _ = mux.on_egress_bytes(e, &c.take());
    }
    mux
}

/// Frames built from random parts: mostly valid headers, random payloads.
fn arb_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        0u8..11,
        any::<u8>(),
        prop::sample::select(vec![0u32, 1, 2, 3, 5, 7, 0x7fff_ffff]),
        prop::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(k, flags, sid, payload)| {
            let mut v = Vec::new();
            frame::write_frame(&mut v, k, flags, sid, &payload);
            v
        })
}

/// Upper bound on what a mux with `small_settings()` may hold: per stream and direction one
/// stream window of DATA plus a header list, per leg a partial frame and header block, plus
/// one connection window of early-credited data per leg.
const BUFFER_BOUND: usize =
    8 * (65_535 + MAX_HEADER_LIST_SIZE) + 3 * (16_384 + 9 + MAX_HEADER_BLOCK_BYTES + 2 * 65_535);

proptest! {
    #![proptest_config(ProptestConfig { cases: crate::core::fuzz_cases(256), ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_and_stay_bounded(
        chunks in prop::collection::vec((0u8..3, prop::collection::vec(any::<u8>(), 0..200)), 1..30)
    ) {
        let mut mux = primed_mux();
        for (to, bytes) in chunks {
            let out = match to {
                0 => mux.on_tunnel_bytes(&bytes),
                1 => mux.on_egress_bytes(1, &bytes),
                _ => mux.on_egress_bytes(2, &bytes),
            };
            let _ = out;
            prop_assert!(mux.buffered_bytes() <= BUFFER_BOUND);
        }
        let _ = mux.detach(1);
        let _ = mux.on_tunnel_closed();
        prop_assert_eq!(mux.active_streams(), 0);
    }

    #[test]
    fn random_frames_never_panic_and_stay_bounded(
        frames in prop::collection::vec((0u8..3, arb_frame()), 1..60)
    ) {
        let mut mux = primed_mux();
        for (to, bytes) in frames {
            let _ = match to {
                0 => mux.on_tunnel_bytes(&bytes),
                1 => mux.on_egress_bytes(1, &bytes),
                _ => mux.on_egress_bytes(2, &bytes),
            };
            prop_assert!(mux.buffered_bytes() <= BUFFER_BOUND);
        }
        let _ = mux.detach(2);
        let _ = mux.detach(1);
        prop_assert!(mux.is_idle() || mux.is_closed());
    }

    #[test]
    fn chunked_input_gives_identical_output(
        egress_cuts in prop::collection::vec(1usize..3000, 0..40),
        tunnel_cuts in prop::collection::vec(1usize..3000, 0..40),
    ) {
        let (e_bytes, t_bytes) = scripted_exchange();
        let whole = replay(&e_bytes, &t_bytes, &[], &[]);
        let cut = replay(&e_bytes, &t_bytes, &egress_cuts, &tunnel_cuts);
        prop_assert_eq!(&whole, &cut);
        // Sanity: the exchange completed.
        let clean = whole.3.iter().filter(|e| matches!(e, MuxEvent::StreamClosed { reset: None, .. })).count();
        prop_assert_eq!(clean, 2);
    }
}

/// A full scripted exchange on one egress: two requests (one with a 100 KiB body buffered behind
/// the tunnel's windows), responses with bodies and trailers. Returns (egress bytes, tunnel bytes).
fn scripted_exchange() -> (Vec<u8>, Vec<u8>) {
    let mut c = Peer::client("e", &[(setting::INITIAL_WINDOW_SIZE, 1 << 20)], 1 << 20);
    c.send_conn = 200_000;
    c.send_init = 200_000;
    c.headers(
        1,
        &[
            (":method", "POST"),
            (":path", "/up"),
            (":scheme", "http"),
            (":authority", "x"),
        ],
        false,
    );
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 256) as u8).collect();
    c.data(1, &body, true);
    c.headers(3, &get_request("/get"), true);
    frame::write_ping(&mut c.out, false, *b"12345678");
    let mut t = Vec::new();
    frame::write_settings(&mut t, &ENVOY_SERVER_SETTINGS);
    frame::write_settings_ack(&mut t);
    frame::write_window_update(&mut t, 0, 100_000);
    frame::write_window_update(&mut t, 1, 100_000);
    let mut s = Peer::new("s", true, IndexPolicy::All);
    s.preface_left = 0;
    s.send_conn = 1 << 30;
    s.send_init = 1 << 30;
    s.headers(3, &[(":status", "200"), ("x-a", "1")], false);
    s.data(3, &[9u8; 40_000], false);
    s.trailers(3, &[("grpc-status", "0")]);
    s.headers(1, &[(":status", "201"), ("x-a", "1")], true);
    t.extend_from_slice(&s.take());
    (c.take(), t)
}

type Replay = (Vec<u8>, Vec<u8>, Vec<EgressId>, Vec<MuxEvent>, bool);

/// Feeds the scripted bytes (egress first, then tunnel), cut at the given chunk sizes, and
/// concatenates everything the mux produced.
fn replay(e_bytes: &[u8], t_bytes: &[u8], e_cuts: &[usize], t_cuts: &[usize]) -> Replay {
    let mut s = small_settings();
    s.initial_window = 200_000;
    s.max_buffered_bytes_per_stream = 200_000;
    let (mut mux, pre) = Mux::new(s);
    let mut to_tunnel = pre;
    let mut to_egress = Vec::new();
    let mut closes = Vec::new();
    let mut events = Vec::new();
    let mut close_tunnel = false;
    let mut absorb = |o: Output| {
        to_tunnel.extend_from_slice(&o.tunnel_bytes());
        to_egress.extend_from_slice(o.egress_bytes(7));
        closes.extend(o.close_egress);
        events.extend(o.events);
        close_tunnel |= o.close_tunnel;
    };
    absorb(mux.attach(7));
    for (bytes, cuts, tunnel) in [(e_bytes, e_cuts, false), (t_bytes, t_cuts, true)] {
        let mut rest = bytes;
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts.get(i).copied().unwrap_or(usize::MAX).min(rest.len());
            i += 1;
            let (a, b) = rest.split_at(n);
            rest = b;
            absorb(if tunnel {
                mux.on_tunnel_bytes(a)
            } else {
                mux.on_egress_bytes(7, a)
            });
        }
    }
    (to_tunnel, to_egress, closes, events, close_tunnel)
}

#[path = "local_tests.rs"]
mod local;

#[test]
fn queued_data_is_handed_on_without_a_copy_unless_chunks_are_joined() {
    let first = Bytes::from(vec![1u8; 100]);
    let ptr = first.as_ptr();
    let mut q = Chunks::default();
    q.push(first, 0);
    q.push(Bytes::new(), 0);
    q.push(Bytes::from(vec![2u8; 50]), 0);
    assert_eq!(q.len(), 150);
    // From the front of one chunk: the same memory, no copy.
    let a = q.take(60);
    assert_eq!(a.as_ptr(), ptr);
    assert_eq!(&a[..], &[1u8; 60][..]);
    // Across two chunks: joined (copied) in order.
    let b = q.take(70);
    assert_eq!(b.len(), 70);
    assert!(b[..40].iter().all(|&x| x == 1) && b[40..].iter().all(|&x| x == 2));
    // Into a frame buffer, at most what is queued.
    let mut out = vec![9u8];
    q.take_into(100, &mut out);
    assert_eq!(out.len(), 21);
    assert!(q.is_empty() && q.take(5).is_empty());
}

#[test]
fn a_queued_chunk_never_keeps_a_buffer_more_than_four_times_its_size() {
    let read = Bytes::from(vec![5u8; 1000]);
    let mut q = Chunks::default();
    // Most of its read: kept shared.
    let big = read.slice(0..600);
    let big_ptr = big.as_ptr();
    q.push(big, 1000);
    q.compact();
    assert_eq!(q.front.as_ptr(), big_ptr);
    // A few bytes of the same read, and of a second one: copied into buffers of their own.
    q.push(read.slice(600..610), 1000);
    q.push(read.slice(610..620), 1000);
    q.compact();
    assert!(q.rest.iter().all(|(b, backing)| *backing == 0 && !(read.as_ptr()..read.as_ptr().wrapping_add(1000)).contains(&b.as_ptr())));
    assert_eq!(q.front.as_ptr(), big_ptr, "already checked chunks are left alone");
    assert_eq!(q.unchecked, 0);
    let mut all = Vec::new();
    q.take_into(usize::MAX, &mut all);
    assert_eq!(all, vec![5u8; 620]);
}

#[test]
fn a_response_piece_left_queued_does_not_keep_its_whole_read() {
    let mut w = World::envoy();
    let req = [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/")];
    for id in [100, 200] {
        let out = w.mux.attach_local(id);
        w.apply(out);
        w.run();
        let out = w.mux.local_open(id, 1, hf(&req), true);
        w.apply(out);
        w.run();
    }
    // Tunnel streams 1 (leg 100) and 3 (leg 200). Leg 100 gets its whole window and gives no
    // credit back, so what follows for it stays queued.
    w.tunnel.headers(1, &[(":status", "200")], false);
    w.tunnel.headers(3, &[(":status", "200")], false);
    w.tunnel.data(1, &vec![1u8; 1 << 20], false);
    w.run();
    // One read: 10 bytes for leg 100 (queued) and 30,000 for leg 200 (handed over).
    w.tunnel.data(1, &[2u8; 10], false);
    w.tunnel.data(3, &vec![3u8; 30_000], false);
    w.run();
    let s = w.mux.streams.values().find(|s| s.egress == 100).expect("stream of leg 100");
    match s.down.items.front() {
        Some(Item::Data { bytes, .. }) => {
            assert_eq!(bytes.len(), 10);
            assert_eq!(bytes.front_backing, 0, "copied into a buffer of its own");
            assert_eq!(bytes.unchecked, 0);
        }
        other => panic!("expected queued DATA, got {other:?}"),
    }
}

#[test]
fn large_payloads_to_the_tunnel_are_parts_of_their_own_and_small_ones_are_copied() {
    let mut c = Conn::new(frame::DEFAULT_MAX_FRAME_SIZE, frame::DEFAULT_WINDOW);
    frame::write_frame_header(&mut c.out, 10, kind::DATA, 0, 1);
    c.push_payload(Bytes::from(vec![3u8; 10]));
    let big = Bytes::from(vec![4u8; OWN_PART_MIN]);
    let ptr = big.as_ptr();
    frame::write_frame_header(&mut c.out, OWN_PART_MIN, kind::DATA, 0, 1);
    c.push_payload(big);
    frame::write_window_update(&mut c.out, 0, 5);
    assert_eq!(c.output_len(), 9 + 10 + 9 + OWN_PART_MIN + 13);
    let (parts, rest) = c.take_output();
    assert_eq!(parts.iter().map(|p| p.bytes().len()).collect::<Vec<_>>(), vec![9 + 10 + 9, OWN_PART_MIN]);
    assert!(matches!(&parts[1], Part::Payload(b) if b.as_ptr() == ptr), "the large payload is not copied");
    assert_eq!(rest.len(), 13);
    assert_eq!(c.output_len(), 0);
    assert_eq!(c.take_output(), (Vec::new(), Vec::new()));
}
