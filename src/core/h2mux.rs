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

mod dispatch;
mod flow;
pub mod frame;
pub mod hpack;
mod huffman;
mod lifecycle;
mod local;
#[cfg(test)]
mod tests;

pub use bytes::Bytes;
use bytes::Buf;
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

/// Smallest DATA payload written to the tunnel as a part of its own instead of being copied
/// into the frame bytes around it (bytes): below it a copy costs less than one more write.
pub const OWN_PART_MIN: usize = 4096;

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
        /// The bytes (shared with the frame they arrived in, not copied).
        bytes: Bytes,
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
    /// Write these to the tunnel first, in order (empty unless a large DATA payload is sent).
    pub tunnel_parts: Vec<Part>,
    /// Then these bytes.
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

/// A piece of tunnel output: frames written by the mux, or a DATA payload of [`OWN_PART_MIN`]
/// bytes or more shared with the stream (or read) it came from, written without a copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// Frame bytes.
    Frames(Vec<u8>),
    /// A DATA payload (its frame header ends the part before).
    Payload(Bytes),
}

impl Part {
    /// The bytes of the part.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Part::Frames(b) => b,
            Part::Payload(b) => b,
        }
    }

    /// `parts` as one byte string, in order (a copy; for tests and tools).
    pub fn join(parts: &[Part]) -> Vec<u8> {
        let mut all = Vec::with_capacity(parts.iter().map(|p| p.bytes().len()).sum());
        for p in parts {
            all.extend_from_slice(p.bytes());
        }
        all
    }
}

impl Output {
    /// Everything for the tunnel ([`Output::tunnel_parts`], then [`Output::to_tunnel`]) as one
    /// byte string (a copy; for tests and tools).
    pub fn tunnel_bytes(&self) -> Vec<u8> {
        let mut all = Part::join(&self.tunnel_parts);
        all.extend_from_slice(&self.to_tunnel);
        all
    }

    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.to_tunnel.is_empty()
            && self.tunnel_parts.is_empty()
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
    Data { bytes: Chunks, end: bool },
}

/// Queued DATA bytes as the chunks they arrived in (frame payloads, request body chunks), shared
/// with their source rather than copied: a chunk taken whole or from its front is handed on
/// without a copy; bytes are copied only where several chunks are joined into one piece. The
/// first chunk is held inline, so the usual item of one chunk allocates nothing here.
///
/// A chunk cut from a larger read keeps that whole read alive. So that a few bytes left queued
/// (a stream whose reader is slow) cannot hold much more memory than they are worth, every chunk
/// records the length of the buffer it shares (`backing`, 0 for a buffer of its own), and
/// [`Chunks::compact`] copies a chunk that is less than 1/[`PIN_RATIO`] of its buffer.
#[derive(Debug, Default)]
struct Chunks {
    /// The first chunk (empty only when nothing is queued) and its backing length.
    front: Bytes,
    front_backing: usize,
    /// The chunks after it, with their backing lengths.
    rest: VecDeque<(Bytes, usize)>,
    len: usize,
    /// Chunks at the back not yet seen by [`Chunks::compact`].
    unchecked: usize,
}

/// A queued chunk may share a buffer at most this many times its own length (see [`Chunks`]).
const PIN_RATIO: usize = 4;

impl Chunks {
    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues `b`, which shares a buffer of `backing` bytes (0: a buffer of its own).
    fn push(&mut self, b: Bytes, backing: usize) {
        if b.is_empty() {
            return;
        }
        self.len += b.len();
        self.unchecked += 1;
        if self.front.is_empty() {
            self.front = b;
            self.front_backing = backing;
        } else {
            self.rest.push_back((b, backing));
        }
    }

    /// Makes the next chunk the front once the front is used up.
    fn refill(&mut self) {
        if self.front.is_empty() {
            let (b, backing) = self.rest.pop_front().unwrap_or_default();
            self.front = b;
            self.front_backing = backing;
        }
        self.unchecked = self.unchecked.min(self.chunk_count());
    }

    fn chunk_count(&self) -> usize {
        usize::from(!self.front.is_empty()) + self.rest.len()
    }

    /// Copies every chunk pushed since the last call that holds a buffer more than
    /// [`PIN_RATIO`] times its own length into a buffer of its own.
    fn compact(&mut self) {
        let fresh = std::mem::take(&mut self.unchecked);
        let skip = self.rest.len().saturating_sub(fresh);
        for (b, backing) in self.rest.iter_mut().skip(skip) {
            unpin(b, backing);
        }
        if fresh > self.rest.len() {
            unpin(&mut self.front, &mut self.front_backing);
        }
    }

    /// Takes the first `n` bytes (at most [`Chunks::len`]): without a copy when the first chunk
    /// holds them all.
    fn take(&mut self, n: usize) -> Bytes {
        let n = n.min(self.len);
        if self.front.len() >= n {
            self.len -= n;
            let piece = self.front.split_to(n);
            self.refill();
            return piece;
        }
        let mut joined = Vec::with_capacity(n);
        self.take_into(n, &mut joined);
        Bytes::from(joined)
    }

    /// Appends the first `n` bytes (at most [`Chunks::len`]) to `out` and drops them.
    fn take_into(&mut self, n: usize, out: &mut Vec<u8>) {
        let mut n = n.min(self.len);
        self.len -= n;
        while n > 0 && !self.front.is_empty() {
            let k = n.min(self.front.len());
            out.extend_from_slice(&self.front[..k]);
            self.front.advance(k);
            self.refill();
            n -= k;
        }
    }
}

/// Gives `b` a buffer of its own if it shares one more than [`PIN_RATIO`] times its length.
fn unpin(b: &mut Bytes, backing: &mut usize) {
    if *backing > b.len().saturating_mul(PIN_RATIO) {
        *b = Bytes::copy_from_slice(b);
    }
    *backing = 0;
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
    /// `flow` DATA bytes (padding included) arrived from the source: out of our window, owed back.
    fn received(&mut self, flow: usize) {
        self.recv_window -= flow as i64;
        self.owed += flow;
        self.data_seen = true;
    }

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

    /// Queues DATA bytes that share a buffer of `backing` bytes (0: a buffer of their own).
    fn push_data(&mut self, data: Bytes, backing: usize, end: bool) {
        self.buffered += data.len();
        if let Some(Item::Data {
            bytes,
            end: e @ false,
        }) = self.items.back_mut()
        {
            bytes.push(data, backing);
            *e = end;
            return;
        }
        let mut bytes = Chunks::default();
        bytes.push(data, backing);
        self.items.push_back(Item::Data { bytes, end });
    }

    /// See [`Chunks::compact`]; only the last DATA items can hold chunks not yet seen.
    fn compact(&mut self) {
        for item in self.items.iter_mut().rev() {
            match item {
                Item::Data { bytes, .. } if bytes.unchecked > 0 => bytes.compact(),
                _ => break,
            }
        }
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
    /// Bytes to write on this connection, after `parts`.
    out: Vec<u8>,
    /// Complete parts to write before `out` (the tunnel leg only; see [`Conn::push_payload`]).
    parts: Vec<Part>,
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
    /// `flow` DATA bytes arrived on this leg: out of the connection window, owed back.
    fn received(&mut self, flow: usize) {
        self.recv_window -= flow as i64;
        self.owed += flow;
        self.credit_dirty = true;
    }

    fn new(max_frame: u32, conn_window: u32) -> Conn {
        Conn {
            reader: FrameReader::new(max_frame),
            decoder: Decoder::new(TABLE_SIZE),
            encoder: Encoder::new(TABLE_SIZE, IndexPolicy::Default, true),
            out: Vec::new(),
            parts: Vec::new(),
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

    /// Appends a DATA payload (its frame header is already in `out`): one of [`OWN_PART_MIN`]
    /// bytes or more becomes a part of its own, written without a copy; a smaller one is copied.
    fn push_payload(&mut self, payload: Bytes) {
        if payload.len() < OWN_PART_MIN {
            self.out.extend_from_slice(&payload);
            return;
        }
        if !self.out.is_empty() {
            self.parts.push(Part::Frames(std::mem::take(&mut self.out)));
        }
        self.parts.push(Part::Payload(payload));
    }

    /// Takes everything to write, in order: the parts, then the bytes after them.
    fn take_output(&mut self) -> (Vec<Part>, Vec<u8>) {
        (std::mem::take(&mut self.parts), std::mem::take(&mut self.out))
    }

    /// Drops everything not yet taken.
    fn clear_output(&mut self) {
        self.out.clear();
        self.parts.clear();
    }

    /// Bytes not yet taken.
    fn output_len(&self) -> usize {
        self.parts.iter().map(|p| p.bytes().len()).sum::<usize>() + self.out.len()
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
    /// The egresses that are wire legs (not local): the only ones whose output bytes mean
    /// anything, so the per-call passes over egress output and connection credit visit these
    /// alone (a session serving many local legs pays nothing per leg there).
    wire: BTreeSet<EgressId>,
    streams: BTreeMap<StreamKey, Stream>,
    next_key: StreamKey,
    /// Streams waiting for a tunnel stream slot, oldest first.
    pending_open: VecDeque<StreamKey>,
    /// Streams with something queued toward the tunnel / toward their egress.
    flush_tunnel: BTreeSet<StreamKey>,
    flush_egress: BTreeSet<StreamKey>,
    /// Streams whose stream-level WINDOW_UPDATEs may be due.
    credit_dirty: BTreeSet<StreamKey>,
    /// Length of the read being processed (the buffer its frames' payloads share).
    input_len: usize,
    /// Streams that queued payloads sharing a read in this call (see [`Chunks::compact`]).
    pinned: Vec<StreamKey>,
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
            wire: BTreeSet::new(),
            streams: BTreeMap::new(),
            next_key: 0,
            pending_open: VecDeque::new(),
            flush_tunnel: BTreeSet::new(),
            flush_egress: BTreeSet::new(),
            credit_dirty: BTreeSet::new(),
            input_len: 0,
            pinned: Vec::new(),
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
        if let Some(closed) = self.begin_attach(egress) {
            return closed;
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
        self.wire.insert(egress);
        self.pump();
        self.collect()
    }


    /// Bytes read from egress connection `egress`. Bytes for an unknown (never attached, detached or
    /// closed) egress are ignored.
    pub fn on_egress_bytes(&mut self, egress: EgressId, data: &[u8]) -> Output {
        self.on_egress_input(egress, Bytes::copy_from_slice(data))
    }

    /// [`Mux::on_egress_bytes`] for bytes the caller owns: DATA payloads are queued without a copy.
    pub fn on_egress_input(&mut self, egress: EgressId, data: Bytes) -> Output {
        if self.dead {
            return self.collect();
        }
        self.input_len = data.len();
        let mut input = data;
        let mut fault: Option<ConnError> = None;
        match self.egresses.get_mut(&egress) {
            None => return self.collect(),
            Some(eg) => {
                while eg.preface < frame::PREFACE.len() {
                    let Some(&b) = input.first() else {
                        break;
                    };
                    if b != frame::PREFACE[eg.preface] {
                        fault = Some(cerr(error::PROTOCOL_ERROR, "bad HTTP/2 client preface"));
                        break;
                    }
                    eg.preface += 1;
                    input.advance(1);
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
        self.on_tunnel_input(Bytes::copy_from_slice(data))
    }

    /// [`Mux::on_tunnel_bytes`] for bytes the caller owns: DATA payloads are queued (and handed to
    /// local legs) without a copy.
    pub fn on_tunnel_input(&mut self, data: Bytes) -> Output {
        if self.dead {
            return self.collect();
        }
        self.input_len = data.len();
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
            self.tunnel.conn.clear_output();
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
            c.reader.buffered() + c.block.as_ref().map_or(0, |b| b.buf.len()) + c.output_len()
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
}
