//! HTTP/2 frame-level multiplexer: many egress connections share one tunnel.
//!
//! On the responder, Envoy's HTTP/2 connection pools are per worker, so with W workers up to W
//! *egress connections* (each an HTTP/2 client talking to our egress filter) want node X, while
//! X may have a single *tunnel*. One HTTP/2 session cannot carry two clients' bytes (two prefaces,
//! two HPACK states, two stream id spaces, two flow-control states), so a [`Mux`] terminates
//! HTTP/2 on every leg and re-frames:
//!
//! - **Tunnel leg**: we are the HTTP/2 client of the initiator's server (RFC 9113 §3.4 preface,
//!   tunnel stream ids 1, 3, 5, ... in the order streams are opened).
//! - **Egress legs**: we are the HTTP/2 server of each egress connection.
//! - Each egress stream maps to one fresh tunnel stream and back. HEADERS/CONTINUATION are decoded
//!   with the sender leg's HPACK decoder and re-encoded with the receiver leg's encoder. DATA is
//!   forwarded under each leg's own flow control (connection and stream windows), buffered per
//!   stream when the receiving leg's windows are closed, and credited back to the sender with
//!   WINDOW_UPDATE as it is forwarded. SETTINGS and PING are answered on each leg locally; PRIORITY
//!   is dropped; RST_STREAM is mapped; GOAWAY from the tunnel drains the mux.
//!
//! The mux does no I/O, has no threads, no timers and no `unsafe`: the caller feeds the bytes read
//! on each connection and writes the bytes of each [`Output`]. One `Mux` per tunnel, used on the
//! tunnel's worker thread.
//!
//! Bounds: input is parsed one frame at a time (at most `9 + max_frame_size` bytes held per leg),
//! header blocks are capped at [`MAX_HEADER_BLOCK_BYTES`] encoded and [`MAX_HEADER_LIST_SIZE`]
//! decoded, queued streams at [`MAX_PENDING_STREAMS`], and buffered DATA by the windows we
//! advertise (a peer that overruns them gets FLOW_CONTROL_ERROR). Connection windows are credited
//! early while less than one connection window of that leg's data is queued, so one slow stream
//! does not stall the others (bounded head-of-line blocking).
//!
//! For the caller:
//! - write `Mux::new`'s bytes first, then every [`Output`] in call order; write an output's bytes
//!   before acting on its `close_egress` / `close_tunnel`;
//! - strip RPING echoes before [`Mux::on_tunnel_bytes`]; never write RPING once the mux exists;
//! - egress PINGs are answered locally, so they do not prove the tunnel alive: use
//!   [`Mux::ping_tunnel`] for that;
//! - egress connections must speak HTTP/2 (prior knowledge); HTTP/1.1 bytes fail the preface.

pub mod frame;
pub mod hpack;
mod huffman;
#[cfg(test)]
mod tests;

use frame::{error, flag, kind, setting, Frame, FrameHeader, FrameReader, FrameTooLarge};
use hpack::{Decoder, Encoder, HeaderField, IndexPolicy};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Identifies one egress connection; chosen by the caller, unique within one [`Mux`].
pub type EgressId = u64;

/// Largest decoded header list we accept on any leg, in bytes counted as name + value + 32 per field
/// (RFC 9113 §6.5.2). Advertised as SETTINGS_MAX_HEADER_LIST_SIZE. A larger list resets that stream.
pub const MAX_HEADER_LIST_SIZE: usize = 65_536;

/// Largest encoded header block (HEADERS plus CONTINUATIONs), in bytes. A larger block is a
/// connection error (ENHANCE_YOUR_CALM) on that leg: it cannot be skipped without decoding it.
pub const MAX_HEADER_BLOCK_BYTES: usize = 131_072;

/// Most CONTINUATION frames accepted for one header block (CONTINUATION flood guard).
pub const MAX_CONTINUATION_FRAMES: usize = 1024;

/// Most egress streams waiting for a tunnel stream slot (the initiator's MAX_CONCURRENT_STREAMS);
/// further streams are refused with RST_STREAM(REFUSED_STREAM).
pub const MAX_PENDING_STREAMS: usize = 1024;

/// Connection-level window of a local leg (in-process: no connection-level flow control).
const LOCAL_UNLIMITED: i64 = 1 << 48;

/// Largest [`LocalFrame::Data`] chunk handed to a local leg, in bytes.
const LOCAL_MAX_CHUNK: u32 = 256 * 1024;

/// HPACK dynamic table size we advertise and use, in bytes (the RFC 9113 §6.5.2 default).
const TABLE_SIZE: usize = hpack::DEFAULT_TABLE_SIZE;

/// Tunables of a [`Mux`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MuxSettings {
    /// SETTINGS_MAX_CONCURRENT_STREAMS advertised to each egress client; streams beyond it are
    /// refused (REFUSED_STREAM). E.g. 1024.
    pub max_concurrent_streams_per_egress: u32,
    /// Flow-control window in bytes advertised to both sides: SETTINGS_INITIAL_WINDOW_SIZE (stream
    /// windows) and the connection window (raised from 65,535 with a WINDOW_UPDATE). Clamped to
    /// 65,535..=2^31-1 (a peer may use the 65,535 default before it sees our SETTINGS). E.g. 1 MiB.
    pub initial_window: u32,
    /// Cap on DATA buffered per stream and direction, in bytes: the advertised stream window is
    /// `min(initial_window, max_buffered_bytes_per_stream)` (at least 65,535), so a peer that obeys
    /// flow control never exceeds it.
    pub max_buffered_bytes_per_stream: usize,
    /// SETTINGS_MAX_FRAME_SIZE advertised to both sides, in bytes (16,384..=16,777,215; clamped).
    pub max_frame_size: u32,
}

impl Default for MuxSettings {
    fn default() -> Self {
        MuxSettings {
            max_concurrent_streams_per_egress: 1024,
            initial_window: 1 << 20,
            max_buffered_bytes_per_stream: 1 << 20,
            max_frame_size: frame::DEFAULT_MAX_FRAME_SIZE,
        }
    }
}

/// One side of the mux: the tunnel or one egress connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Leg {
    /// The tunnel to the initiator (we are the HTTP/2 client).
    Tunnel,
    /// An egress connection (we are its HTTP/2 server).
    Egress(EgressId),
}

/// Something the caller may log or count. Error codes are RFC 9113 §7 codes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MuxEvent {
    /// An egress stream got its tunnel stream (its request HEADERS were written to the tunnel).
    StreamOpened {
        /// The egress connection.
        egress: EgressId,
        /// Egress stream id.
        stream: u32,
        /// Tunnel stream id.
        tunnel_stream: u32,
    },
    /// A stream is gone on both legs and forgotten.
    StreamClosed {
        /// The egress connection.
        egress: EgressId,
        /// Egress stream id.
        stream: u32,
        /// Tunnel stream id, if it was ever opened on the tunnel.
        tunnel_stream: Option<u32>,
        /// `None` on a clean close (END_STREAM both ways), else the first RST_STREAM code (sent or
        /// received) that ended it.
        reset: Option<u32>,
    },
    /// The initiator sent GOAWAY: streams above `last_stream_id` were refused to their egress, no
    /// new streams are accepted.
    TunnelGoaway {
        /// Last tunnel stream id the initiator will process.
        last_stream_id: u32,
        /// GOAWAY error code.
        error_code: u32,
    },
    /// An egress client sent GOAWAY (it will close; its open streams continue).
    EgressGoaway {
        /// The egress connection.
        egress: EgressId,
        /// Last stream id in the GOAWAY (server-initiated ids; 0 for Envoy).
        last_stream_id: u32,
        /// GOAWAY error code.
        error_code: u32,
    },
    /// The initiator acknowledged a PING sent with [`Mux::ping_tunnel`].
    TunnelPingAck {
        /// The 8 opaque bytes of the PING.
        opaque: [u8; 8],
    },
    /// A connection error on `leg`: it was sent GOAWAY and is being closed (see
    /// [`Output::close_egress`] / [`Output::close_tunnel`]).
    ProtocolError {
        /// The leg at fault.
        leg: Leg,
        /// Human-readable reason.
        detail: String,
    },
}

/// One unit of a response (or a reset) for a stream of a *local* egress leg: an in-process
/// client (the HTTP filter path) that hands the mux header lists and body chunks instead of
/// HTTP/2 bytes (see [`Mux::attach_local`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalFrame {
    /// A header section: the response headers (first; a 1xx status may precede the final one)
    /// or, after data, the trailers (`end` is then true).
    Headers {
        /// The decoded fields, pseudo-headers first.
        fields: Vec<HeaderField>,
        /// END_STREAM: nothing follows.
        end: bool,
    },
    /// Body bytes of the response; at most what [`Mux::local_credit`] allowed.
    Data {
        /// The bytes.
        bytes: Vec<u8>,
        /// END_STREAM: nothing follows.
        end: bool,
    },
    /// The stream was reset with this RFC 9113 §7 error code; it is forgotten. A reset with
    /// NO_ERROR after a complete response (`end` seen) changes nothing for the client.
    Reset {
        /// RFC 9113 §7 error code.
        code: u32,
    },
}

/// What the caller must do after a call: write bytes (in order, before closing), then close.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Bytes to write to the tunnel.
    pub to_tunnel: Vec<u8>,
    /// Response pieces for streams of local egress legs, in order.
    pub to_local: Vec<(EgressId, u32, LocalFrame)>,
    /// Bytes to write to egress connections, at most one entry per egress.
    pub to_egress: Vec<(EgressId, Vec<u8>)>,
    /// Egress connections to close (after writing their bytes above); the mux has forgotten them.
    pub close_egress: Vec<EgressId>,
    /// Close the tunnel (after writing `to_tunnel`); the mux is finished.
    pub close_tunnel: bool,
    /// Events, in order.
    pub events: Vec<MuxEvent>,
}

impl Output {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.to_tunnel.is_empty()
            && self.to_local.is_empty()
            && self.to_egress.is_empty()
            && self.close_egress.is_empty()
            && !self.close_tunnel
            && self.events.is_empty()
    }

    /// Bytes for `egress` in this output (empty if none).
    pub fn egress_bytes(&self, egress: EgressId) -> &[u8] {
        self.to_egress
            .iter()
            .find(|(e, _)| *e == egress)
            .map(|(_, b)| b.as_slice())
            .unwrap_or(&[])
    }
}

/// A connection error (RFC 9113 §5.4.1) on one leg.
#[derive(Debug)]
struct ConnError {
    code: u32,
    detail: String,
}

fn cerr(code: u32, detail: &str) -> ConnError {
    ConnError {
        code,
        detail: detail.to_string(),
    }
}

type StreamKey = u64;

/// RST_STREAM toward an egress leg: a frame on the wire, or a [`LocalFrame::Reset`] for a local leg.
fn rst_to_egress(
    eg: &mut Egress,
    id: EgressId,
    local_out: &mut Vec<(EgressId, u32, LocalFrame)>,
    sid: u32,
    code: u32,
) {
    if eg.local {
        local_out.push((id, sid, LocalFrame::Reset { code }));
    } else {
        frame::write_rst_stream(&mut eg.conn.out, sid, code);
    }
}

/// One queued unit of a stream direction.
#[derive(Debug)]
enum Item {
    Headers { fields: Vec<HeaderField>, end: bool },
    Data { bytes: VecDeque<u8>, end: bool },
}

/// One direction of one stream: what the source leg sent that the destination leg has not got yet,
/// with the flow-control state of both ends.
#[derive(Debug)]
struct Pipe {
    items: VecDeque<Item>,
    /// DATA bytes queued in `items`.
    buffered: usize,
    /// Header bytes (name + value + 32 per field) queued in `items`.
    header_bytes: usize,
    /// The source sent END_STREAM.
    end_received: bool,
    /// We sent END_STREAM to the destination.
    sent_end: bool,
    /// The source sent DATA (a later HEADERS is a trailer section and must end the stream).
    data_seen: bool,
    /// How many more DATA bytes the source may send on this stream (our advertised window).
    recv_window: i64,
    /// DATA bytes received (padding included) and not yet credited back to the source.
    owed: usize,
    /// How many DATA bytes the destination lets us send on this stream.
    send_window: i64,
    /// RST_STREAM code to send to the destination once END_STREAM is written (RST(NO_ERROR) that
    /// arrived after a complete message, RFC 9113 §8.1).
    reset_after: Option<u32>,
}

impl Pipe {
    fn new(recv_window: u32, send_window: u32) -> Pipe {
        Pipe {
            items: VecDeque::new(),
            buffered: 0,
            header_bytes: 0,
            end_received: false,
            sent_end: false,
            data_seen: false,
            recv_window: i64::from(recv_window),
            owed: 0,
            send_window: i64::from(send_window),
            reset_after: None,
        }
    }

    fn push_headers(&mut self, fields: Vec<HeaderField>, end: bool) {
        self.header_bytes += fields.iter().map(HeaderField::size).sum::<usize>();
        self.items.push_back(Item::Headers { fields, end });
    }

    fn push_data(&mut self, data: &[u8], end: bool) {
        self.buffered += data.len();
        if let Some(Item::Data {
            bytes,
            end: e @ false,
        }) = self.items.back_mut()
        {
            // `extend` from a slice reference copies in bulk (not byte by byte).
            bytes.extend(data);
            *e = end;
            return;
        }
        self.items.push_back(Item::Data {
            bytes: VecDeque::from(data.to_vec()),
            end,
        });
    }

    /// Drops everything queued; returns the DATA bytes dropped.
    fn discard(&mut self) -> usize {
        let n = self.buffered;
        self.items.clear();
        self.buffered = 0;
        self.header_bytes = 0;
        self.reset_after = None;
        n
    }
}

/// One stream, known on both legs.
#[derive(Debug)]
struct Stream {
    egress: EgressId,
    egress_sid: u32,
    /// `None` while queued for a tunnel slot.
    tunnel_sid: Option<u32>,
    /// Egress -> tunnel (request).
    up: Pipe,
    /// Tunnel -> egress (response).
    down: Pipe,
    /// The stream is closed on the egress leg (its id is forgotten there).
    egress_closed: bool,
    /// The stream is closed on the tunnel leg (or was never opened there and never will be).
    tunnel_closed: bool,
    reset: Option<u32>,
}

/// A header block being reassembled from HEADERS + CONTINUATION.
#[derive(Debug)]
struct PartialBlock {
    stream: u32,
    end_stream: bool,
    buf: Vec<u8>,
    frames: usize,
}

/// Per-connection HTTP/2 state shared by the tunnel and egress legs.
#[derive(Debug)]
struct Conn {
    reader: FrameReader,
    decoder: Decoder,
    encoder: Encoder,
    /// Bytes to write on this connection.
    out: Vec<u8>,
    /// The peer's first SETTINGS arrived.
    got_settings: bool,
    peer_max_frame: u32,
    peer_initial_window: u32,
    peer_max_concurrent: u32,
    /// Connection-level window for what we send.
    send_window: i64,
    /// Connection-level window for what the peer may still send us.
    recv_window: i64,
    /// DATA bytes received and not yet credited back (connection level).
    owed: usize,
    /// DATA bytes from this peer still queued in pipes.
    buffered_in: usize,
    block: Option<PartialBlock>,
    /// A connection-level WINDOW_UPDATE may be due.
    credit_dirty: bool,
}

impl Conn {
    fn new(max_frame: u32, conn_window: u32) -> Conn {
        Conn {
            reader: FrameReader::new(max_frame),
            decoder: Decoder::new(TABLE_SIZE),
            encoder: Encoder::new(TABLE_SIZE, IndexPolicy::Default, true),
            out: Vec::new(),
            got_settings: false,
            peer_max_frame: frame::DEFAULT_MAX_FRAME_SIZE,
            peer_initial_window: frame::DEFAULT_WINDOW,
            peer_max_concurrent: u32::MAX,
            send_window: i64::from(frame::DEFAULT_WINDOW),
            recv_window: i64::from(conn_window),
            owed: 0,
            buffered_in: 0,
            block: None,
            credit_dirty: false,
        }
    }
}

#[derive(Debug)]
struct Egress {
    conn: Conn,
    /// Bytes of the client preface matched so far (24 when done).
    preface: usize,
    /// Egress stream id -> stream, while open on this leg.
    streams: BTreeMap<u32, StreamKey>,
    /// Every live stream of this egress (including those closed here but still flushing).
    keys: BTreeSet<StreamKey>,
    /// Highest stream id the client opened.
    max_sid: u32,
    goaway_sent: bool,
    /// A local (in-process) leg: no bytes, [`LocalFrame`]s out, API calls in.
    local: bool,
}

#[derive(Debug)]
struct Tunnel {
    conn: Conn,
    /// Tunnel stream id -> stream, while open on the tunnel.
    streams: BTreeMap<u32, StreamKey>,
    /// Next tunnel stream id to allocate (odd); above 2^31-1 means exhausted.
    next_sid: u64,
    /// Lowest last_stream_id of the initiator's GOAWAYs.
    goaway: Option<u32>,
}

/// Normalized settings.
#[derive(Clone, Copy, Debug)]
struct Cfg {
    stream_window: u32,
    conn_window: u32,
    max_frame: u32,
    max_concurrent: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    ToTunnel,
    ToEgress,
}

enum Lookup {
    Open(StreamKey),
    Closed,
    Idle,
}

/// The multiplexer for one tunnel. See the module docs.
#[derive(Debug)]
pub struct Mux {
    cfg: Cfg,
    tunnel: Tunnel,
    egresses: BTreeMap<EgressId, Egress>,
    streams: BTreeMap<StreamKey, Stream>,
    next_key: StreamKey,
    /// Streams waiting for a tunnel stream slot, oldest first.
    pending_open: VecDeque<StreamKey>,
    /// Streams with something queued toward the tunnel / toward their egress.
    flush_tunnel: BTreeSet<StreamKey>,
    flush_egress: BTreeSet<StreamKey>,
    /// Streams whose stream-level WINDOW_UPDATEs may be due.
    credit_dirty: BTreeSet<StreamKey>,
    /// Round-robin offset for fairness between streams.
    rr: usize,
    /// No new streams (tunnel GOAWAY or tunnel ids exhausted).
    draining: bool,
    /// Finished: tunnel closed or failed.
    dead: bool,
    // Accumulated for the current call's Output.
    events: Vec<MuxEvent>,
    close_egress: Vec<EgressId>,
    close_tunnel: bool,
    orphan_out: Vec<(EgressId, Vec<u8>)>,
    local_out: Vec<(EgressId, u32, LocalFrame)>,
}

impl Mux {
    /// Creates the mux and returns the bytes to write on the tunnel first: the client preface
    /// (RFC 9113 §3.4), our SETTINGS (ENABLE_PUSH=0, HEADER_TABLE_SIZE=4096, INITIAL_WINDOW_SIZE,
    /// MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE) and a WINDOW_UPDATE raising the connection window.
    pub fn new(settings: MuxSettings) -> (Mux, Vec<u8>) {
        let max_win = frame::MAX_WINDOW as u64;
        let stream_window = u64::from(settings.initial_window)
            .min(settings.max_buffered_bytes_per_stream as u64)
            .clamp(u64::from(frame::DEFAULT_WINDOW), max_win) as u32;
        let conn_window = u64::from(settings.initial_window)
            .clamp(u64::from(frame::DEFAULT_WINDOW), max_win) as u32;
        let cfg = Cfg {
            stream_window,
            conn_window,
            max_frame: settings
                .max_frame_size
                .clamp(frame::DEFAULT_MAX_FRAME_SIZE, frame::MAX_MAX_FRAME_SIZE),
            max_concurrent: settings.max_concurrent_streams_per_egress,
        };
        let mut pre = frame::PREFACE.to_vec();
        frame::write_settings(
            &mut pre,
            &[
                (setting::ENABLE_PUSH, 0),
                (setting::HEADER_TABLE_SIZE, TABLE_SIZE as u32),
                (setting::INITIAL_WINDOW_SIZE, cfg.stream_window),
                (setting::MAX_FRAME_SIZE, cfg.max_frame),
                (setting::MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST_SIZE as u32),
            ],
        );
        if cfg.conn_window > frame::DEFAULT_WINDOW {
            frame::write_window_update(&mut pre, 0, cfg.conn_window - frame::DEFAULT_WINDOW);
        }
        let mux = Mux {
            cfg,
            tunnel: Tunnel {
                conn: Conn::new(cfg.max_frame, cfg.conn_window),
                streams: BTreeMap::new(),
                next_sid: 1,
                goaway: None,
            },
            egresses: BTreeMap::new(),
            streams: BTreeMap::new(),
            next_key: 0,
            pending_open: VecDeque::new(),
            flush_tunnel: BTreeSet::new(),
            flush_egress: BTreeSet::new(),
            credit_dirty: BTreeSet::new(),
            rr: 0,
            draining: false,
            dead: false,
            events: Vec::new(),
            close_egress: Vec::new(),
            close_tunnel: false,
            orphan_out: Vec::new(),
            local_out: Vec::new(),
        };
        (mux, pre)
    }

    /// A new egress connection joins. Returns our server SETTINGS (MAX_CONCURRENT_STREAMS,
    /// INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE) and a connection WINDOW_UPDATE
    /// for it; its bytes must start with the client preface. If the id is already attached, the old
    /// connection's state is dropped first (as by [`Mux::detach`]). On a draining mux a GOAWAY
    /// follows (its streams will be refused); on a finished mux the egress is closed at once.
    pub fn attach(&mut self, egress: EgressId) -> Output {
        if self.dead {
            self.close_egress.push(egress);
            return self.collect();
        }
        if self.egresses.contains_key(&egress) {
            self.drop_egress(egress);
        }
        let mut conn = Conn::new(self.cfg.max_frame, self.cfg.conn_window);
        frame::write_settings(
            &mut conn.out,
            &[
                (setting::MAX_CONCURRENT_STREAMS, self.cfg.max_concurrent),
                (setting::INITIAL_WINDOW_SIZE, self.cfg.stream_window),
                (setting::MAX_FRAME_SIZE, self.cfg.max_frame),
                (setting::MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST_SIZE as u32),
            ],
        );
        if self.cfg.conn_window > frame::DEFAULT_WINDOW {
            frame::write_window_update(
                &mut conn.out,
                0,
                self.cfg.conn_window - frame::DEFAULT_WINDOW,
            );
        }
        let mut eg = Egress {
            conn,
            preface: 0,
            streams: BTreeMap::new(),
            keys: BTreeSet::new(),
            max_sid: 0,
            goaway_sent: false,
            local: false,
        };
        if self.draining {
            frame::write_goaway(&mut eg.conn.out, 0, error::NO_ERROR, b"tunnel draining");
            eg.goaway_sent = true;
        }
        self.egresses.insert(egress, eg);
        self.pump();
        self.collect()
    }

    /// A local (in-process) egress leg joins: a client that opens streams with
    /// [`Mux::local_open`], sends with [`Mux::local_data`] / [`Mux::local_trailers`], cancels with
    /// [`Mux::local_cancel`], and receives [`Output::to_local`] frames as far as its
    /// [`Mux::local_credit`] allows (its flow control: at most `initial_window` bytes per stream
    /// before the first credit). No bytes are exchanged with it and no HPACK runs on its side.
    /// On a finished mux it is closed at once; on a draining mux its streams are refused.
    pub fn attach_local(&mut self, egress: EgressId) -> Output {
        if self.dead {
            self.close_egress.push(egress);
            return self.collect();
        }
        if self.egresses.contains_key(&egress) {
            self.drop_egress(egress);
        }
        let mut conn = Conn::new(self.cfg.max_frame, self.cfg.conn_window);
        conn.got_settings = true;
        // Connection-level flow control does not apply in-process: per-stream credit does.
        conn.recv_window = LOCAL_UNLIMITED;
        conn.send_window = LOCAL_UNLIMITED;
        conn.peer_initial_window = self.cfg.stream_window;
        conn.peer_max_frame = LOCAL_MAX_CHUNK;
        let eg = Egress {
            conn,
            preface: frame::PREFACE.len(),
            streams: BTreeMap::new(),
            keys: BTreeSet::new(),
            max_sid: 0,
            goaway_sent: self.draining,
            local: true,
        };
        self.egresses.insert(egress, eg);
        self.collect()
    }

    /// Opens stream `sid` (odd, above every id this leg used before) of local leg `egress` with
    /// the request header list `fields` (pseudo-headers first); `end` when the request has no
    /// body. The stream waits for a tunnel stream slot like any other; a refusal comes back as a
    /// [`LocalFrame::Reset`] (REFUSED_STREAM: draining or too many streams).
    pub fn local_open(&mut self, egress: EgressId, sid: u32, fields: Vec<HeaderField>, end: bool) -> Output {
        let local = self.egresses.get(&egress).is_some_and(|e| e.local);
        if self.dead || !local {
            self.local_out.push((egress, sid, LocalFrame::Reset { code: error::REFUSED_STREAM }));
            return self.collect();
        }
        let list_size = fields.iter().map(HeaderField::size).sum();
        let oversize = list_size > MAX_HEADER_LIST_SIZE;
        self.new_request(egress, sid, hpack::DecodedBlock { fields, list_size, oversize }, end);
        self.pump();
        self.collect()
    }

    /// Request body bytes of stream `sid` of local leg `egress`; at most
    /// [`Mux::local_send_window`] bytes (more is a stream error: FLOW_CONTROL_ERROR). `end` ends
    /// the request. Unknown or closed streams are ignored.
    pub fn local_data(&mut self, egress: EgressId, sid: u32, data: &[u8], end: bool) -> Output {
        if self.dead || !matches!(self.lookup(Leg::Egress(egress), sid), Lookup::Open(_)) {
            return self.collect();
        }
        let h = FrameHeader {
            length: data.len() as u32,
            kind: kind::DATA,
            flags: if end { flag::END_STREAM } else { 0 },
            stream: sid,
        };
        if let Err(e) = self.on_data(Leg::Egress(egress), h, data) {
            self.egress_conn_error(egress, e);
        }
        self.pump();
        self.collect()
    }

    /// Request trailers of stream `sid` of local leg `egress` (ends the request).
    pub fn local_trailers(&mut self, egress: EgressId, sid: u32, fields: Vec<HeaderField>) -> Output {
        if self.dead {
            return self.collect();
        }
        if let Lookup::Open(key) = self.lookup(Leg::Egress(egress), sid) {
            let list_size = fields.iter().map(HeaderField::size).sum();
            let oversize = list_size > MAX_HEADER_LIST_SIZE;
            let block = hpack::DecodedBlock { fields, list_size, oversize };
            self.forward_headers(key, Leg::Egress(egress), block, true);
            self.pump();
        }
        self.collect()
    }

    /// The local client gave up on stream `sid` (e.g. its downstream went away): the tunnel stream
    /// is reset with CANCEL (a queued one is dropped) and the stream is forgotten.
    pub fn local_cancel(&mut self, egress: EgressId, sid: u32) -> Output {
        if let Lookup::Open(key) = self.lookup(Leg::Egress(egress), sid) {
            self.reset_stream(key, None, Some(error::CANCEL), error::CANCEL);
            self.pump();
        } else if let Some(key) = self.egresses.get(&egress).and_then(|e| {
            e.keys.iter().copied().find(|k| self.streams.get(k).is_some_and(|s| s.egress_sid == sid))
        }) {
            // Closed toward the client already (response complete) but the request is still
            // flowing: stop it too.
            self.reset_stream(key, None, Some(error::CANCEL), error::CANCEL);
            self.pump();
        }
        self.collect()
    }

    /// The local client consumed `n` response bytes of stream `sid`: that much more may be sent
    /// to it (its window update).
    pub fn local_credit(&mut self, egress: EgressId, sid: u32, n: u32) -> Output {
        if let Lookup::Open(key) = self.lookup(Leg::Egress(egress), sid) {
            if let Some(s) = self.streams.get_mut(&key) {
                s.down.send_window = (s.down.send_window + i64::from(n)).min(frame::MAX_WINDOW);
                if !s.down.items.is_empty() {
                    self.flush_egress.insert(key);
                }
                self.pump();
            }
        }
        self.collect()
    }

    /// How many more request body bytes stream `sid` of local leg `egress` may send now (0 for
    /// an unknown or closed stream).
    pub fn local_send_window(&self, egress: EgressId, sid: u32) -> usize {
        match self.lookup(Leg::Egress(egress), sid) {
            Lookup::Open(key) => self
                .streams
                .get(&key)
                .filter(|s| !s.up.end_received)
                .map_or(0, |s| s.up.recv_window.max(0) as usize),
            _ => 0,
        }
    }

    /// Bytes read from egress connection `egress`. Bytes for an unknown (never attached, detached or
    /// closed) egress are ignored.
    pub fn on_egress_bytes(&mut self, egress: EgressId, data: &[u8]) -> Output {
        if self.dead {
            return self.collect();
        }
        let mut input = data;
        let mut fault: Option<ConnError> = None;
        match self.egresses.get_mut(&egress) {
            None => return self.collect(),
            Some(eg) => {
                while eg.preface < frame::PREFACE.len() {
                    let Some((&b, rest)) = input.split_first() else {
                        break;
                    };
                    if b != frame::PREFACE[eg.preface] {
                        fault = Some(cerr(error::PROTOCOL_ERROR, "bad HTTP/2 client preface"));
                        break;
                    }
                    eg.preface += 1;
                    input = rest;
                }
            }
        }
        if fault.is_none() {
            while let Some(eg) = self.egresses.get_mut(&egress) {
                let f = match eg.conn.reader.pull(&mut input) {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(FrameTooLarge(n)) => {
                        fault = Some(cerr(
                            error::FRAME_SIZE_ERROR,
                            &format!("frame of {n} bytes exceeds our max frame size"),
                        ));
                        break;
                    }
                };
                if let Err(e) = self.leg_frame(Leg::Egress(egress), f) {
                    fault = Some(e);
                    break;
                }
                self.pump();
                if self.dead {
                    break;
                }
            }
        }
        if let Some(e) = fault {
            self.egress_conn_error(egress, e);
            self.pump();
        }
        self.collect()
    }

    /// Bytes read from the tunnel (RPING bytes must have been removed by the caller).
    pub fn on_tunnel_bytes(&mut self, data: &[u8]) -> Output {
        if self.dead {
            return self.collect();
        }
        let mut input = data;
        loop {
            let f = match self.tunnel.conn.reader.pull(&mut input) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(FrameTooLarge(n)) => {
                    self.tunnel_conn_error(cerr(
                        error::FRAME_SIZE_ERROR,
                        &format!("frame of {n} bytes exceeds our max frame size"),
                    ));
                    break;
                }
            };
            if let Err(e) = self.leg_frame(Leg::Tunnel, f) {
                self.tunnel_conn_error(e);
                break;
            }
            self.pump();
            if self.dead {
                break;
            }
        }
        self.collect()
    }

    /// The egress connection closed: its streams are reset on the tunnel with RST_STREAM(CANCEL)
    /// (queued ones are dropped) and its state is forgotten.
    pub fn detach(&mut self, egress: EgressId) -> Output {
        if self.egresses.contains_key(&egress) {
            self.drop_egress(egress);
            self.pump();
        }
        self.collect()
    }

    /// The tunnel closed: every egress gets RST_STREAM on its open streams (REFUSED_STREAM for
    /// streams never sent on the tunnel, INTERNAL_ERROR otherwise) and a GOAWAY, and is closed.
    /// The mux is finished.
    pub fn on_tunnel_closed(&mut self) -> Output {
        if !self.dead {
            self.shutdown(false);
            self.tunnel.conn.out.clear();
        }
        self.collect()
    }

    /// Sends a PING on the tunnel (e.g. a keepalive driven by the caller's timer: PINGs from egress
    /// clients are answered locally and do not test the tunnel). The ACK is reported as
    /// [`MuxEvent::TunnelPingAck`].
    pub fn ping_tunnel(&mut self, opaque: [u8; 8]) -> Output {
        if !self.dead {
            frame::write_ping(&mut self.tunnel.conn.out, false, opaque);
        }
        self.collect()
    }

    /// False after the initiator sent GOAWAY, when tunnel stream ids are exhausted, or once the mux
    /// is finished (tunnel closed or failed).
    pub fn can_accept_egress(&self) -> bool {
        !self.dead && !self.draining && self.tunnel.next_sid <= u64::from(frame::MAX_STREAM_ID)
    }

    /// Streams alive (queued, or open on at least one leg).
    pub fn active_streams(&self) -> usize {
        self.streams.len()
    }

    /// Streams waiting for a tunnel stream slot.
    pub fn pending_streams(&self) -> usize {
        self.pending_open.len()
    }

    /// Attached egress connections.
    pub fn egress_count(&self) -> usize {
        self.egresses.len()
    }

    /// True once the mux is finished (tunnel closed, failed, or drained after GOAWAY).
    pub fn is_closed(&self) -> bool {
        self.dead
    }

    /// Bytes held by the mux: queued DATA and header fields, partial frames and partial header
    /// blocks (for metrics and bound checks).
    pub fn buffered_bytes(&self) -> usize {
        let conn = |c: &Conn| {
            c.reader.buffered() + c.block.as_ref().map_or(0, |b| b.buf.len()) + c.out.len()
        };
        let pipes: usize = self
            .streams
            .values()
            .map(|s| s.up.buffered + s.up.header_bytes + s.down.buffered + s.down.header_bytes)
            .sum();
        pipes
            + conn(&self.tunnel.conn)
            + self.egresses.values().map(|e| conn(&e.conn)).sum::<usize>()
    }

    /// Internal maps are empty apart from per-egress connection state (for leak checks).
    pub fn is_idle(&self) -> bool {
        self.streams.is_empty()
            && self.pending_open.is_empty()
            && self.tunnel.streams.is_empty()
            && self
                .egresses
                .values()
                .all(|e| e.streams.is_empty() && e.keys.is_empty())
    }

    // ----------------------------------------------------------------------------------------
    // Output collection and shutdown
    // ----------------------------------------------------------------------------------------

    fn collect(&mut self) -> Output {
        let mut to_egress: Vec<(EgressId, Vec<u8>)> = Vec::new();
        for (id, bytes) in self.orphan_out.drain(..) {
            if bytes.is_empty() {
                continue;
            }
            match to_egress.iter_mut().find(|(e, _)| *e == id) {
                Some((_, b)) => b.extend_from_slice(&bytes),
                None => to_egress.push((id, bytes)),
            }
        }
        for (id, eg) in self.egresses.iter_mut() {
            if eg.local {
                // SETTINGS ACKs, WINDOW_UPDATEs, GOAWAYs: meaningless to an in-process client.
                eg.conn.out.clear();
                continue;
            }
            if !eg.conn.out.is_empty() {
                let bytes = std::mem::take(&mut eg.conn.out);
                match to_egress.iter_mut().find(|(e, _)| e == id) {
                    Some((_, b)) => b.extend_from_slice(&bytes),
                    None => to_egress.push((*id, bytes)),
                }
            }
        }
        Output {
            to_tunnel: std::mem::take(&mut self.tunnel.conn.out),
            to_local: std::mem::take(&mut self.local_out),
            to_egress,
            close_egress: std::mem::take(&mut self.close_egress),
            close_tunnel: std::mem::replace(&mut self.close_tunnel, false),
            events: std::mem::take(&mut self.events),
        }
    }

    /// Forgets an egress: its streams are reset on the tunnel (CANCEL) or dropped from the queue.
    /// Its pending output is discarded (the caller moves it to `orphan_out` first when needed).
    fn drop_egress(&mut self, egress: EgressId) {
        let Some(eg) = self.egresses.remove(&egress) else {
            return;
        };
        for key in eg.keys {
            let Some(mut s) = self.streams.remove(&key) else {
                continue;
            };
            match s.tunnel_sid {
                Some(t) if !s.tunnel_closed => {
                    frame::write_rst_stream(&mut self.tunnel.conn.out, t, error::CANCEL);
                    self.tunnel.streams.remove(&t);
                }
                None => self.pending_open.retain(|k| *k != key),
                _ => {}
            }
            let dropped = s.down.discard();
            self.tunnel.conn.buffered_in = self.tunnel.conn.buffered_in.saturating_sub(dropped);
            self.tunnel.conn.credit_dirty = true;
            self.events.push(MuxEvent::StreamClosed {
                egress,
                stream: s.egress_sid,
                tunnel_stream: s.tunnel_sid,
                reset: Some(s.reset.unwrap_or(error::CANCEL)),
            });
        }
    }

    fn egress_conn_error(&mut self, egress: EgressId, e: ConnError) {
        let Some(eg) = self.egresses.get_mut(&egress) else {
            return;
        };
        frame::write_goaway(&mut eg.conn.out, eg.max_sid, e.code, e.detail.as_bytes());
        let out = std::mem::take(&mut eg.conn.out);
        if !eg.local {
            self.orphan_out.push((egress, out));
        }
        self.close_egress.push(egress);
        self.events.push(MuxEvent::ProtocolError {
            leg: Leg::Egress(egress),
            detail: e.detail,
        });
        self.drop_egress(egress);
    }

    fn tunnel_conn_error(&mut self, e: ConnError) {
        frame::write_goaway(&mut self.tunnel.conn.out, 0, e.code, e.detail.as_bytes());
        self.events.push(MuxEvent::ProtocolError {
            leg: Leg::Tunnel,
            detail: e.detail,
        });
        self.shutdown(true);
    }

    /// Ends everything: egress streams are reset, egresses get GOAWAY and are closed; the tunnel is
    /// closed when `close_tunnel`.
    fn shutdown(&mut self, close_tunnel: bool) {
        self.dead = true;
        self.close_tunnel = close_tunnel;
        let egresses = std::mem::take(&mut self.egresses);
        for (id, mut eg) in egresses {
            for key in &eg.keys {
                let Some(s) = self.streams.remove(key) else {
                    continue;
                };
                let code = if s.tunnel_sid.is_none() {
                    error::REFUSED_STREAM
                } else {
                    error::INTERNAL_ERROR
                };
                if !s.egress_closed {
                    if eg.local {
                        self.local_out.push((id, s.egress_sid, LocalFrame::Reset { code }));
                    } else {
                        frame::write_rst_stream(&mut eg.conn.out, s.egress_sid, code);
                    }
                }
                self.events.push(MuxEvent::StreamClosed {
                    egress: id,
                    stream: s.egress_sid,
                    tunnel_stream: s.tunnel_sid,
                    reset: Some(s.reset.unwrap_or(code)),
                });
            }
            if !eg.goaway_sent {
                frame::write_goaway(
                    &mut eg.conn.out,
                    eg.max_sid,
                    error::NO_ERROR,
                    b"tunnel closed",
                );
            }
            if !eg.local {
                self.orphan_out.push((id, std::mem::take(&mut eg.conn.out)));
            }
            self.close_egress.push(id);
        }
        self.streams.clear();
        self.tunnel.streams.clear();
        self.pending_open.clear();
        self.flush_tunnel.clear();
        self.flush_egress.clear();
        self.credit_dirty.clear();
    }

    /// Stops accepting streams: queued streams are refused and every egress gets GOAWAY.
    fn start_draining(&mut self) {
        if self.draining {
            return;
        }
        self.draining = true;
        let queued: Vec<StreamKey> = self.pending_open.drain(..).collect();
        for key in queued {
            self.reset_stream(
                key,
                Some(error::REFUSED_STREAM),
                None,
                error::REFUSED_STREAM,
            );
        }
        for eg in self.egresses.values_mut() {
            if !eg.goaway_sent {
                frame::write_goaway(
                    &mut eg.conn.out,
                    eg.max_sid,
                    error::NO_ERROR,
                    b"tunnel draining",
                );
                eg.goaway_sent = true;
            }
        }
    }

    // ----------------------------------------------------------------------------------------
    // Frame dispatch
    // ----------------------------------------------------------------------------------------

    fn conn(&mut self, leg: Leg) -> Option<&mut Conn> {
        match leg {
            Leg::Tunnel => Some(&mut self.tunnel.conn),
            Leg::Egress(e) => self.egresses.get_mut(&e).map(|x| &mut x.conn),
        }
    }

    fn lookup(&self, leg: Leg, sid: u32) -> Lookup {
        match leg {
            Leg::Tunnel => {
                if let Some(k) = self.tunnel.streams.get(&sid) {
                    Lookup::Open(*k)
                } else if sid % 2 == 1 && u64::from(sid) < self.tunnel.next_sid {
                    Lookup::Closed
                } else {
                    Lookup::Idle
                }
            }
            Leg::Egress(e) => match self.egresses.get(&e) {
                None => Lookup::Closed,
                Some(eg) => {
                    if let Some(k) = eg.streams.get(&sid) {
                        Lookup::Open(*k)
                    } else if sid % 2 == 1 && sid <= eg.max_sid {
                        Lookup::Closed
                    } else {
                        Lookup::Idle
                    }
                }
            },
        }
    }

    fn leg_frame(&mut self, leg: Leg, f: Frame) -> Result<(), ConnError> {
        let h = f.header;
        {
            let Some(conn) = self.conn(leg) else {
                return Ok(());
            };
            match &conn.block {
                Some(b) if h.kind != kind::CONTINUATION || h.stream != b.stream => {
                    return Err(cerr(
                        error::PROTOCOL_ERROR,
                        "header block interrupted (expected CONTINUATION)",
                    ));
                }
                None if h.kind == kind::CONTINUATION => {
                    return Err(cerr(error::PROTOCOL_ERROR, "CONTINUATION without HEADERS"));
                }
                _ => {}
            }
            if !conn.got_settings && (h.kind != kind::SETTINGS || h.has(flag::ACK)) {
                return Err(cerr(error::PROTOCOL_ERROR, "first frame is not SETTINGS"));
            }
        }
        let p = f.payload.as_slice();
        match h.kind {
            kind::DATA => self.on_data(leg, h, p),
            kind::HEADERS => self.on_headers(leg, h, p),
            kind::CONTINUATION => self.on_continuation(leg, h, p),
            kind::PRIORITY => self.on_priority(leg, h, p),
            kind::RST_STREAM => self.on_rst(leg, h, p),
            kind::SETTINGS => self.on_settings(leg, h, p),
            kind::PUSH_PROMISE => Err(cerr(
                error::PROTOCOL_ERROR,
                "PUSH_PROMISE (push is disabled)",
            )),
            kind::PING => self.on_ping(leg, h, p),
            kind::GOAWAY => self.on_goaway(leg, h, p),
            kind::WINDOW_UPDATE => self.on_window_update(leg, h, p),
            _ => Ok(()), // Unknown frame types are ignored (RFC 9113 §4.1).
        }
    }

    fn on_data(&mut self, leg: Leg, h: FrameHeader, payload: &[u8]) -> Result<(), ConnError> {
        if h.stream == 0 {
            return Err(cerr(error::PROTOCOL_ERROR, "DATA on stream 0"));
        }
        let body = frame::strip_padding(h.flags, payload)
            .ok_or_else(|| cerr(error::PROTOCOL_ERROR, "DATA padding too long"))?;
        let flow = payload.len();
        {
            let Some(conn) = self.conn(leg) else {
                return Ok(());
            };
            if flow as i64 > conn.recv_window {
                return Err(cerr(
                    error::FLOW_CONTROL_ERROR,
                    "connection flow-control window exceeded",
                ));
            }
            conn.recv_window -= flow as i64;
            conn.owed += flow;
            conn.credit_dirty = true;
        }
        let key = match self.lookup(leg, h.stream) {
            Lookup::Open(k) => k,
            Lookup::Closed => return Ok(()),
            Lookup::Idle => return Err(cerr(error::PROTOCOL_ERROR, "DATA on an idle stream")),
        };
        let end = h.has(flag::END_STREAM);
        let from_egress = leg != Leg::Tunnel;
        let Some(s) = self.streams.get_mut(&key) else {
            return Ok(());
        };
        let dest_closed = if from_egress {
            s.tunnel_closed
        } else {
            s.egress_closed
        };
        let pipe = if from_egress { &mut s.up } else { &mut s.down };
        if pipe.end_received {
            self.stream_error(key, leg, error::STREAM_CLOSED);
            return Ok(());
        }
        if flow as i64 > pipe.recv_window {
            self.stream_error(key, leg, error::FLOW_CONTROL_ERROR);
            return Ok(());
        }
        pipe.recv_window -= flow as i64;
        pipe.owed += flow;
        pipe.data_seen = true;
        let mut queued = 0;
        if !dest_closed && (!body.is_empty() || end) {
            pipe.push_data(body, end);
            queued = body.len();
        }
        if end {
            pipe.end_received = true;
        }
        if let Some(conn) = self.conn(leg) {
            conn.buffered_in += queued;
        }
        self.credit_dirty.insert(key);
        if from_egress {
            self.flush_tunnel.insert(key);
        } else {
            self.flush_egress.insert(key);
        }
        if end {
            self.settle(key);
        }
        Ok(())
    }

    fn on_headers(&mut self, leg: Leg, h: FrameHeader, payload: &[u8]) -> Result<(), ConnError> {
        if h.stream == 0 {
            return Err(cerr(error::PROTOCOL_ERROR, "HEADERS on stream 0"));
        }
        let mut p = frame::strip_padding(h.flags, payload)
            .ok_or_else(|| cerr(error::PROTOCOL_ERROR, "HEADERS padding too long"))?;
        if h.has(flag::PRIORITY) {
            // Priority information is dropped (RFC 9113 §5.3.2 deprecates it).
            p = p
                .get(5..)
                .ok_or_else(|| cerr(error::FRAME_SIZE_ERROR, "HEADERS too short for priority"))?;
        }
        let end_stream = h.has(flag::END_STREAM);
        if h.has(flag::END_HEADERS) {
            return self.on_header_block(leg, h.stream, end_stream, p);
        }
        if p.len() > MAX_HEADER_BLOCK_BYTES {
            return Err(cerr(error::ENHANCE_YOUR_CALM, "header block too large"));
        }
        if let Some(conn) = self.conn(leg) {
            conn.block = Some(PartialBlock {
                stream: h.stream,
                end_stream,
                buf: p.to_vec(),
                frames: 1,
            });
        }
        Ok(())
    }

    fn on_continuation(
        &mut self,
        leg: Leg,
        h: FrameHeader,
        payload: &[u8],
    ) -> Result<(), ConnError> {
        let done = {
            let Some(conn) = self.conn(leg) else {
                return Ok(());
            };
            let Some(b) = conn.block.as_mut() else {
                return Err(cerr(error::PROTOCOL_ERROR, "CONTINUATION without HEADERS"));
            };
            b.frames += 1;
            if b.buf.len() + payload.len() > MAX_HEADER_BLOCK_BYTES
                || b.frames > MAX_CONTINUATION_FRAMES
            {
                return Err(cerr(error::ENHANCE_YOUR_CALM, "header block too large"));
            }
            b.buf.extend_from_slice(payload);
            if h.has(flag::END_HEADERS) {
                conn.block.take()
            } else {
                None
            }
        };
        match done {
            Some(b) => self.on_header_block(leg, b.stream, b.end_stream, &b.buf),
            None => Ok(()),
        }
    }

    fn on_header_block(
        &mut self,
        leg: Leg,
        sid: u32,
        end: bool,
        block: &[u8],
    ) -> Result<(), ConnError> {
        let decoded = {
            let Some(conn) = self.conn(leg) else {
                return Ok(());
            };
            conn.decoder
                .decode(block, MAX_HEADER_LIST_SIZE)
                .map_err(|e| cerr(error::COMPRESSION_ERROR, &format!("HPACK: {e:?}")))?
        };
        match (leg, self.lookup(leg, sid)) {
            (_, Lookup::Open(key)) => {
                self.forward_headers(key, leg, decoded, end);
                Ok(())
            }
            // Recently closed (e.g. reset by us): decoded for HPACK state, then dropped.
            (_, Lookup::Closed) => Ok(()),
            (Leg::Egress(e), Lookup::Idle) if sid % 2 == 1 => {
                self.new_request(e, sid, decoded, end);
                Ok(())
            }
            (Leg::Egress(_), Lookup::Idle) => {
                Err(cerr(error::PROTOCOL_ERROR, "HEADERS on an even stream id"))
            }
            (Leg::Tunnel, Lookup::Idle) => Err(cerr(
                error::PROTOCOL_ERROR,
                "HEADERS on a stream we did not open",
            )),
        }
    }

    fn new_request(&mut self, egress: EgressId, sid: u32, decoded: hpack::DecodedBlock, end: bool) {
        let refuse = self.draining || self.pending_open.len() >= MAX_PENDING_STREAMS;
        let Some(eg) = self.egresses.get_mut(&egress) else {
            return;
        };
        eg.max_sid = sid;
        let code = if decoded.oversize {
            Some(error::PROTOCOL_ERROR)
        } else if refuse || eg.goaway_sent || eg.streams.len() >= self.cfg.max_concurrent as usize {
            Some(error::REFUSED_STREAM)
        } else {
            None
        };
        if let Some(code) = code {
            rst_to_egress(eg, egress, &mut self.local_out, sid, code);
            self.events.push(MuxEvent::StreamClosed {
                egress,
                stream: sid,
                tunnel_stream: None,
                reset: Some(code),
            });
            return;
        }
        let key = self.next_key;
        self.next_key += 1;
        let mut up = Pipe::new(self.cfg.stream_window, 0);
        up.push_headers(decoded.fields, end);
        up.end_received = end;
        let down = Pipe::new(self.cfg.stream_window, eg.conn.peer_initial_window);
        eg.streams.insert(sid, key);
        eg.keys.insert(key);
        self.streams.insert(
            key,
            Stream {
                egress,
                egress_sid: sid,
                tunnel_sid: None,
                up,
                down,
                egress_closed: false,
                tunnel_closed: false,
                reset: None,
            },
        );
        self.pending_open.push_back(key);
    }

    fn forward_headers(
        &mut self,
        key: StreamKey,
        leg: Leg,
        decoded: hpack::DecodedBlock,
        end: bool,
    ) {
        let from_egress = leg != Leg::Tunnel;
        let Some(s) = self.streams.get_mut(&key) else {
            return;
        };
        let dest_closed = if from_egress {
            s.tunnel_closed
        } else {
            s.egress_closed
        };
        let pipe = if from_egress { &mut s.up } else { &mut s.down };
        let fault = if pipe.end_received {
            Some(error::STREAM_CLOSED)
        } else if decoded.oversize || (pipe.data_seen && !end) {
            Some(error::PROTOCOL_ERROR)
        } else {
            None
        };
        if let Some(code) = fault {
            self.stream_error(key, leg, code);
            return;
        }
        if !dest_closed {
            pipe.push_headers(decoded.fields, end);
        }
        if end {
            pipe.end_received = true;
        }
        if from_egress {
            self.flush_tunnel.insert(key);
        } else {
            self.flush_egress.insert(key);
        }
        if end {
            self.settle(key);
        }
    }

    fn on_priority(&mut self, leg: Leg, h: FrameHeader, payload: &[u8]) -> Result<(), ConnError> {
        if h.stream == 0 {
            return Err(cerr(error::PROTOCOL_ERROR, "PRIORITY on stream 0"));
        }
        if payload.len() != 5 {
            if let Lookup::Open(key) = self.lookup(leg, h.stream) {
                self.stream_error(key, leg, error::FRAME_SIZE_ERROR);
            }
        }
        Ok(())
    }

    fn on_rst(&mut self, leg: Leg, h: FrameHeader, payload: &[u8]) -> Result<(), ConnError> {
        if h.stream == 0 {
            return Err(cerr(error::PROTOCOL_ERROR, "RST_STREAM on stream 0"));
        }
        let code = <[u8; 4]>::try_from(payload)
            .map(u32::from_be_bytes)
            .map_err(|_| cerr(error::FRAME_SIZE_ERROR, "RST_STREAM length is not 4"))?;
        let key = match self.lookup(leg, h.stream) {
            Lookup::Open(k) => k,
            Lookup::Closed => return Ok(()),
            Lookup::Idle => {
                return Err(cerr(error::PROTOCOL_ERROR, "RST_STREAM on an idle stream"))
            }
        };
        let from_egress = leg != Leg::Tunnel;
        let Some(s) = self.streams.get_mut(&key) else {
            return Ok(());
        };
        // RST(NO_ERROR) after a complete message: deliver the message, then the reset.
        let (toward, other_open) = if from_egress {
            (&mut s.up, s.tunnel_sid.is_some() && !s.tunnel_closed)
        } else {
            (&mut s.down, !s.egress_closed)
        };
        if code == error::NO_ERROR && other_open && toward.end_received && !toward.sent_end {
            toward.reset_after = Some(error::NO_ERROR);
            s.reset.get_or_insert(error::NO_ERROR);
            let (back, src_conn_leg) = if from_egress {
                (&mut s.down, Leg::Tunnel)
            } else {
                (&mut s.up, leg)
            };
            let dropped = back.discard();
            if from_egress {
                s.egress_closed = true;
            } else {
                s.tunnel_closed = true;
            }
            let (egress, esid, tsid) = (s.egress, s.egress_sid, s.tunnel_sid);
            if let Some(conn) = self.conn(src_conn_leg) {
                conn.buffered_in = conn.buffered_in.saturating_sub(dropped);
                conn.credit_dirty = true;
            }
            if from_egress {
                if let Some(eg) = self.egresses.get_mut(&egress) {
                    eg.streams.remove(&esid);
                }
            } else if let Some(t) = tsid {
                self.tunnel.streams.remove(&t);
            }
            return Ok(());
        }
        if from_egress {
            self.reset_stream(key, None, Some(code), code);
        } else {
            self.reset_stream(key, Some(code), None, code);
        }
        Ok(())
    }

    fn on_settings(&mut self, leg: Leg, h: FrameHeader, payload: &[u8]) -> Result<(), ConnError> {
        if h.stream != 0 {
            return Err(cerr(error::PROTOCOL_ERROR, "SETTINGS on a stream"));
        }
        if h.has(flag::ACK) {
            return if payload.is_empty() {
                Ok(())
            } else {
                Err(cerr(error::FRAME_SIZE_ERROR, "SETTINGS ACK with payload"))
            };
        }
        if !payload.len().is_multiple_of(6) {
            return Err(cerr(
                error::FRAME_SIZE_ERROR,
                "SETTINGS length is not a multiple of 6",
            ));
        }
        let is_tunnel = leg == Leg::Tunnel;
        let Some(conn) = self.conn(leg) else {
            return Ok(());
        };
        let old_iw = conn.peer_initial_window;
        for p in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([p[0], p[1]]);
            let v = u32::from_be_bytes([p[2], p[3], p[4], p[5]]);
            match id {
                setting::HEADER_TABLE_SIZE => conn.encoder.set_peer_limit(v),
                setting::ENABLE_PUSH if v > 1 || (is_tunnel && v == 1) => {
                    return Err(cerr(error::PROTOCOL_ERROR, "bad SETTINGS_ENABLE_PUSH"));
                }
                setting::MAX_CONCURRENT_STREAMS => conn.peer_max_concurrent = v,
                setting::INITIAL_WINDOW_SIZE => {
                    if i64::from(v) > frame::MAX_WINDOW {
                        return Err(cerr(
                            error::FLOW_CONTROL_ERROR,
                            "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1",
                        ));
                    }
                    conn.peer_initial_window = v;
                }
                setting::MAX_FRAME_SIZE => {
                    if !(frame::DEFAULT_MAX_FRAME_SIZE..=frame::MAX_MAX_FRAME_SIZE).contains(&v) {
                        return Err(cerr(error::PROTOCOL_ERROR, "bad SETTINGS_MAX_FRAME_SIZE"));
                    }
                    conn.peer_max_frame = v;
                }
                setting::ENABLE_CONNECT_PROTOCOL if v > 1 => {
                    return Err(cerr(
                        error::PROTOCOL_ERROR,
                        "bad SETTINGS_ENABLE_CONNECT_PROTOCOL",
                    ));
                }
                _ => {}
            }
        }
        conn.got_settings = true;
        let delta = i64::from(conn.peer_initial_window) - i64::from(old_iw);
        frame::write_settings_ack(&mut conn.out);
        if delta != 0 {
            // RFC 9113 §6.9.2: adjust every open stream's send window toward this peer.
            let keys: Vec<StreamKey> = match leg {
                Leg::Tunnel => self.tunnel.streams.values().copied().collect(),
                Leg::Egress(e) => self
                    .egresses
                    .get(&e)
                    .map(|eg| eg.streams.values().copied().collect())
                    .unwrap_or_default(),
            };
            for key in keys {
                let Some(s) = self.streams.get_mut(&key) else {
                    continue;
                };
                let pipe = if is_tunnel { &mut s.up } else { &mut s.down };
                pipe.send_window += delta;
                if pipe.send_window > frame::MAX_WINDOW {
                    return Err(cerr(
                        error::FLOW_CONTROL_ERROR,
                        "stream window above 2^31-1 after SETTINGS",
                    ));
                }
            }
        }
        Ok(())
    }

    fn on_ping(&mut self, leg: Leg, h: FrameHeader, payload: &[u8]) -> Result<(), ConnError> {
        if h.stream != 0 {
            return Err(cerr(error::PROTOCOL_ERROR, "PING on a stream"));
        }
        let opaque = <[u8; 8]>::try_from(payload)
            .map_err(|_| cerr(error::FRAME_SIZE_ERROR, "PING length is not 8"))?;
        if h.has(flag::ACK) {
            if leg == Leg::Tunnel {
                self.events.push(MuxEvent::TunnelPingAck { opaque });
            }
        } else if let Some(conn) = self.conn(leg) {
            frame::write_ping(&mut conn.out, true, opaque);
        }
        Ok(())
    }

    fn on_goaway(&mut self, leg: Leg, h: FrameHeader, payload: &[u8]) -> Result<(), ConnError> {
        if h.stream != 0 {
            return Err(cerr(error::PROTOCOL_ERROR, "GOAWAY on a stream"));
        }
        if payload.len() < 8 {
            return Err(cerr(error::FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes"));
        }
        let last = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
            & frame::MAX_STREAM_ID;
        let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
        match leg {
            Leg::Egress(egress) => {
                self.events.push(MuxEvent::EgressGoaway {
                    egress,
                    last_stream_id: last,
                    error_code: code,
                });
            }
            Leg::Tunnel => {
                self.events.push(MuxEvent::TunnelGoaway {
                    last_stream_id: last,
                    error_code: code,
                });
                let last = self.tunnel.goaway.map_or(last, |g| g.min(last));
                self.tunnel.goaway = Some(last);
                let refused: Vec<StreamKey> = self
                    .tunnel
                    .streams
                    .range(last.saturating_add(1)..)
                    .map(|(_, k)| *k)
                    .collect();
                for key in refused {
                    // Not processed by the initiator: safe for the egress client to retry.
                    self.reset_stream(
                        key,
                        Some(error::REFUSED_STREAM),
                        None,
                        error::REFUSED_STREAM,
                    );
                }
                self.start_draining();
            }
        }
        Ok(())
    }

    fn on_window_update(
        &mut self,
        leg: Leg,
        h: FrameHeader,
        payload: &[u8],
    ) -> Result<(), ConnError> {
        let inc = <[u8; 4]>::try_from(payload)
            .map(|b| u32::from_be_bytes(b) & 0x7fff_ffff)
            .map_err(|_| cerr(error::FRAME_SIZE_ERROR, "WINDOW_UPDATE length is not 4"))?;
        if h.stream == 0 {
            let Some(conn) = self.conn(leg) else {
                return Ok(());
            };
            if inc == 0 {
                return Err(cerr(
                    error::PROTOCOL_ERROR,
                    "WINDOW_UPDATE with increment 0",
                ));
            }
            conn.send_window += i64::from(inc);
            if conn.send_window > frame::MAX_WINDOW {
                return Err(cerr(
                    error::FLOW_CONTROL_ERROR,
                    "connection window above 2^31-1",
                ));
            }
            return Ok(());
        }
        let key = match self.lookup(leg, h.stream) {
            Lookup::Open(k) => k,
            Lookup::Closed => return Ok(()),
            Lookup::Idle => {
                return Err(cerr(
                    error::PROTOCOL_ERROR,
                    "WINDOW_UPDATE on an idle stream",
                ))
            }
        };
        let Some(s) = self.streams.get_mut(&key) else {
            return Ok(());
        };
        let pipe = if leg == Leg::Tunnel {
            &mut s.up
        } else {
            &mut s.down
        };
        if inc == 0 {
            self.stream_error(key, leg, error::PROTOCOL_ERROR);
            return Ok(());
        }
        pipe.send_window += i64::from(inc);
        if pipe.send_window > frame::MAX_WINDOW {
            self.stream_error(key, leg, error::FLOW_CONTROL_ERROR);
        }
        Ok(())
    }

    // ----------------------------------------------------------------------------------------
    // Stream lifecycle
    // ----------------------------------------------------------------------------------------

    /// A stream error caused by `leg`: that leg gets RST_STREAM(`code`), the other leg CANCEL
    /// (tunnel) or INTERNAL_ERROR (egress).
    fn stream_error(&mut self, key: StreamKey, leg: Leg, code: u32) {
        if leg == Leg::Tunnel {
            self.reset_stream(key, Some(error::INTERNAL_ERROR), Some(code), code);
        } else {
            self.reset_stream(key, Some(code), Some(error::CANCEL), code);
        }
    }

    /// Resets a stream on both legs (sending RST_STREAM with the given codes to legs where it is
    /// still open; `None` = the leg already knows) and forgets it.
    fn reset_stream(
        &mut self,
        key: StreamKey,
        to_egress: Option<u32>,
        to_tunnel: Option<u32>,
        reason: u32,
    ) {
        let Some(s) = self.streams.get_mut(&key) else {
            return;
        };
        if !s.egress_closed {
            if let Some(eg) = self.egresses.get_mut(&s.egress) {
                if let Some(c) = to_egress {
                    rst_to_egress(eg, s.egress, &mut self.local_out, s.egress_sid, c);
                }
                eg.streams.remove(&s.egress_sid);
            }
            s.egress_closed = true;
        }
        if !s.tunnel_closed {
            match s.tunnel_sid {
                Some(t) => {
                    if let Some(c) = to_tunnel {
                        frame::write_rst_stream(&mut self.tunnel.conn.out, t, c);
                    }
                    self.tunnel.streams.remove(&t);
                }
                None => self.pending_open.retain(|k| *k != key),
            }
            s.tunnel_closed = true;
        }
        s.reset.get_or_insert(reason);
        let up = s.up.discard();
        let down = s.down.discard();
        if let Some(eg) = self.egresses.get_mut(&s.egress) {
            eg.conn.buffered_in = eg.conn.buffered_in.saturating_sub(up);
            eg.conn.credit_dirty = true;
        }
        self.tunnel.conn.buffered_in = self.tunnel.conn.buffered_in.saturating_sub(down);
        self.tunnel.conn.credit_dirty = true;
        self.settle(key);
    }

    /// Marks legs closed once END_STREAM went both ways on them; forgets the stream when both legs
    /// are closed.
    fn settle(&mut self, key: StreamKey) {
        let Some(s) = self.streams.get_mut(&key) else {
            return;
        };
        if !s.egress_closed && s.up.end_received && s.down.sent_end {
            s.egress_closed = true;
            if let Some(eg) = self.egresses.get_mut(&s.egress) {
                eg.streams.remove(&s.egress_sid);
            }
        }
        if !s.tunnel_closed && s.down.end_received && s.up.sent_end {
            if let Some(t) = s.tunnel_sid {
                s.tunnel_closed = true;
                self.tunnel.streams.remove(&t);
            }
        }
        if s.egress_closed && s.tunnel_closed {
            let (egress, stream, tunnel_stream, reset) =
                (s.egress, s.egress_sid, s.tunnel_sid, s.reset);
            self.streams.remove(&key);
            self.flush_tunnel.remove(&key);
            self.flush_egress.remove(&key);
            self.credit_dirty.remove(&key);
            if let Some(eg) = self.egresses.get_mut(&egress) {
                eg.keys.remove(&key);
            }
            self.events.push(MuxEvent::StreamClosed {
                egress,
                stream,
                tunnel_stream,
                reset,
            });
        }
    }

    // ----------------------------------------------------------------------------------------
    // Moving data: open queued streams, flush pipes, credit windows
    // ----------------------------------------------------------------------------------------

    /// Runs after every frame and API call: opens queued streams, forwards what the windows allow,
    /// sends due WINDOW_UPDATEs, and finishes a drained mux.
    fn pump(&mut self) {
        if self.dead {
            return;
        }
        self.open_pending();
        self.flush_dir(Dir::ToTunnel);
        self.flush_dir(Dir::ToEgress);
        self.send_credits();
        if self.draining && self.streams.is_empty() {
            // Drained after GOAWAY (or stream ids exhausted): nothing more can happen here.
            self.shutdown(true);
        }
    }

    fn open_pending(&mut self) {
        while let Some(&key) = self.pending_open.front() {
            if self.draining
                || self.tunnel.streams.len() as u64
                    >= u64::from(self.tunnel.conn.peer_max_concurrent)
            {
                return;
            }
            if self.tunnel.next_sid > u64::from(frame::MAX_STREAM_ID) {
                self.start_draining();
                return;
            }
            self.pending_open.pop_front();
            let Some(s) = self.streams.get_mut(&key) else {
                continue;
            };
            if s.tunnel_closed {
                continue;
            }
            let t = self.tunnel.next_sid as u32;
            self.tunnel.next_sid += 2;
            s.tunnel_sid = Some(t);
            s.up.send_window = i64::from(self.tunnel.conn.peer_initial_window);
            self.tunnel.streams.insert(t, key);
            // The request HEADERS go out now, so tunnel ids appear on the wire in increasing order
            // (RFC 9113 §5.1.1).
            let conn = &mut self.tunnel.conn;
            if let Some(Item::Headers { fields, end }) = s.up.items.pop_front() {
                s.up.header_bytes =
                    s.up.header_bytes
                        .saturating_sub(fields.iter().map(HeaderField::size).sum());
                let mut block = Vec::new();
                conn.encoder.encode(&fields, &mut block);
                frame::write_header_block(&mut conn.out, t, end, &block, conn.peer_max_frame);
                if end {
                    s.up.sent_end = true;
                }
            }
            if !s.up.items.is_empty() {
                self.flush_tunnel.insert(key);
            }
            self.events.push(MuxEvent::StreamOpened {
                egress: s.egress,
                stream: s.egress_sid,
                tunnel_stream: t,
            });
            self.settle(key);
        }
    }

    fn flush_dir(&mut self, dir: Dir) {
        let set = match dir {
            Dir::ToTunnel => &self.flush_tunnel,
            Dir::ToEgress => &self.flush_egress,
        };
        if set.is_empty() {
            return;
        }
        let mut keys: Vec<StreamKey> = set.iter().copied().collect();
        let n = keys.len();
        keys.rotate_left(self.rr % n);
        self.rr = self.rr.wrapping_add(1);
        loop {
            let mut progress = false;
            for &k in &keys {
                progress |= self.flush_one(k, dir);
            }
            if !progress {
                break;
            }
        }
        let streams = &self.streams;
        let keep = |k: &StreamKey| {
            streams.get(k).is_some_and(|s| {
                let (pipe, closed) = match dir {
                    Dir::ToTunnel => (&s.up, s.tunnel_closed),
                    Dir::ToEgress => (&s.down, s.egress_closed),
                };
                !closed && !pipe.items.is_empty()
            })
        };
        match dir {
            Dir::ToTunnel => self.flush_tunnel.retain(keep),
            Dir::ToEgress => self.flush_egress.retain(keep),
        }
    }

    /// Writes at most one frame (or one header block) of `key`'s pipe toward `dir`. Returns whether
    /// anything was written.
    fn flush_one(&mut self, key: StreamKey, dir: Dir) -> bool {
        let Some(s) = self.streams.get_mut(&key) else {
            return false;
        };
        let mut local = None;
        let (pipe, conn, sid, src) = match dir {
            Dir::ToTunnel => {
                let Some(t) = s.tunnel_sid else { return false };
                if s.tunnel_closed {
                    return false;
                }
                (&mut s.up, &mut self.tunnel.conn, t, Leg::Egress(s.egress))
            }
            Dir::ToEgress => {
                if s.egress_closed {
                    return false;
                }
                let Some(eg) = self.egresses.get_mut(&s.egress) else {
                    return false;
                };
                if eg.local {
                    local = Some((s.egress, &mut self.local_out));
                }
                (&mut s.down, &mut eg.conn, s.egress_sid, Leg::Tunnel)
            }
        };
        let mut sent = 0usize;
        let progress = match pipe.items.front_mut() {
            None => false,
            Some(Item::Headers { .. }) => {
                if let Some(Item::Headers { fields, end }) = pipe.items.pop_front() {
                    pipe.header_bytes = pipe
                        .header_bytes
                        .saturating_sub(fields.iter().map(HeaderField::size).sum());
                    if let Some((id, out)) = local.as_mut() {
                        out.push((*id, sid, LocalFrame::Headers { fields, end }));
                    } else {
                        let mut block = Vec::new();
                        conn.encoder.encode(&fields, &mut block);
                        frame::write_header_block(&mut conn.out, sid, end, &block, conn.peer_max_frame);
                    }
                    if end {
                        pipe.sent_end = true;
                    }
                }
                true
            }
            Some(Item::Data { bytes, end }) => {
                let end = *end;
                if bytes.is_empty() {
                    if let Some((id, out)) = local.as_mut() {
                        out.push((*id, sid, LocalFrame::Data { bytes: Vec::new(), end }));
                    } else {
                        frame::write_data(&mut conn.out, sid, end, &[]);
                    }
                    pipe.sent_end |= end;
                    pipe.items.pop_front();
                    true
                } else {
                    let n = (bytes.len() as i64)
                        .min(conn.send_window)
                        .min(pipe.send_window)
                        .min(i64::from(conn.peer_max_frame))
                        .max(0) as usize;
                    if n == 0 {
                        false
                    } else {
                        let es = end && n == bytes.len();
                        if let Some((id, out)) = local.as_mut() {
                            let (a, b) = bytes.as_slices();
                            let na = n.min(a.len());
                            let mut chunk = Vec::with_capacity(n);
                            chunk.extend_from_slice(&a[..na]);
                            chunk.extend_from_slice(&b[..n - na]);
                            bytes.drain(..n);
                            out.push((*id, sid, LocalFrame::Data { bytes: chunk, end: es }));
                        } else {
                            frame::write_frame_header(
                                &mut conn.out,
                                n,
                                kind::DATA,
                                if es { flag::END_STREAM } else { 0 },
                                sid,
                            );
                            let (a, b) = bytes.as_slices();
                            let na = n.min(a.len());
                            conn.out.extend_from_slice(&a[..na]);
                            conn.out.extend_from_slice(&b[..n - na]);
                            bytes.drain(..n);
                        }
                        conn.send_window -= n as i64;
                        pipe.send_window -= n as i64;
                        pipe.buffered -= n;
                        sent = n;
                        if bytes.is_empty() {
                            pipe.items.pop_front();
                        }
                        pipe.sent_end |= es;
                        true
                    }
                }
            }
        };
        let mut deferred_rst = None;
        if pipe.sent_end && pipe.items.is_empty() {
            if let Some(code) = pipe.reset_after.take() {
                match local.as_mut() {
                    Some((id, out)) => out.push((*id, sid, LocalFrame::Reset { code })),
                    None => frame::write_rst_stream(&mut conn.out, sid, code),
                }
                deferred_rst = Some(code);
            }
        }
        let ended = pipe.sent_end;
        if sent > 0 {
            self.credit_dirty.insert(key);
            if let Some(c) = self.conn(src) {
                c.buffered_in = c.buffered_in.saturating_sub(sent);
                c.credit_dirty = true;
            }
        }
        if deferred_rst.is_some() {
            // The destination leg is now reset too.
            if let Some(s) = self.streams.get_mut(&key) {
                match dir {
                    Dir::ToTunnel => {
                        s.tunnel_closed = true;
                        if let Some(t) = s.tunnel_sid {
                            self.tunnel.streams.remove(&t);
                        }
                    }
                    Dir::ToEgress => {
                        s.egress_closed = true;
                        if let Some(eg) = self.egresses.get_mut(&s.egress) {
                            eg.streams.remove(&s.egress_sid);
                        }
                    }
                }
            }
        }
        if ended {
            self.settle(key);
        }
        progress
    }

    /// Sends WINDOW_UPDATEs for data that left the mux: per stream, what was received minus what is
    /// still queued; per connection, the same but letting up to one connection window of queued
    /// data be credited early, so one slow stream does not stall the whole leg (head-of-line).
    fn send_credits(&mut self) {
        let stream_thresh = (self.cfg.stream_window / 2).max(1) as usize;
        let conn_thresh = (self.cfg.conn_window / 2).max(1) as usize;
        let budget = self.cfg.conn_window as usize;
        let dirty = std::mem::take(&mut self.credit_dirty);
        for key in dirty {
            let Some(s) = self.streams.get_mut(&key) else {
                continue;
            };
            if !s.egress_closed && !s.up.end_received {
                let c = s.up.owed.saturating_sub(s.up.buffered);
                if c >= stream_thresh {
                    if let Some(eg) = self.egresses.get_mut(&s.egress) {
                        frame::write_window_update(&mut eg.conn.out, s.egress_sid, c as u32);
                        s.up.recv_window += c as i64;
                        s.up.owed -= c;
                    }
                }
            }
            if let (false, false, Some(t)) = (s.tunnel_closed, s.down.end_received, s.tunnel_sid) {
                let c = s.down.owed.saturating_sub(s.down.buffered);
                if c >= stream_thresh {
                    frame::write_window_update(&mut self.tunnel.conn.out, t, c as u32);
                    s.down.recv_window += c as i64;
                    s.down.owed -= c;
                }
            }
        }
        let credit = |c: &mut Conn| {
            if !c.credit_dirty {
                return;
            }
            c.credit_dirty = false;
            let hold = c.buffered_in.saturating_sub(budget);
            let n = c.owed.saturating_sub(hold);
            if n >= conn_thresh {
                frame::write_window_update(&mut c.out, 0, n as u32);
                c.recv_window += n as i64;
                c.owed -= n;
            }
        };
        credit(&mut self.tunnel.conn);
        for eg in self.egresses.values_mut() {
            credit(&mut eg.conn);
        }
    }
}
