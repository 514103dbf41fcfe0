//! HTTP/2 framing (RFC 9113 §4 and §6): frame constants, a bounded incremental frame reader and
//! frame writers.
//!
//! Everything here is bounds-safe: the reader never holds more than one frame (9-byte header plus
//! at most the payload limit it was given), and the writers never fail.

use bytes::{Buf, Bytes};

/// The client connection preface (RFC 9113 §3.4), 24 bytes.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Length of a frame header in bytes (RFC 9113 §4.1).
pub const FRAME_HEADER_LEN: usize = 9;

/// The default and minimum SETTINGS_MAX_FRAME_SIZE, in bytes (RFC 9113 §6.5.2).
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;

/// The largest legal SETTINGS_MAX_FRAME_SIZE, in bytes (2^24 - 1, RFC 9113 §6.5.2).
pub const MAX_MAX_FRAME_SIZE: u32 = 16_777_215;

/// The initial flow-control window of every connection and stream, in bytes (RFC 9113 §6.9.2).
pub const DEFAULT_WINDOW: u32 = 65_535;

/// The largest flow-control window, in bytes (2^31 - 1, RFC 9113 §6.9.1).
pub const MAX_WINDOW: i64 = 0x7fff_ffff;

/// The largest stream identifier (2^31 - 1, RFC 9113 §5.1.1).
pub const MAX_STREAM_ID: u32 = 0x7fff_ffff;

/// Frame type codes (RFC 9113 §6).
pub mod kind {
    /// DATA (§6.1).
    pub const DATA: u8 = 0x0;
    /// HEADERS (§6.2).
    pub const HEADERS: u8 = 0x1;
    /// PRIORITY (§6.3, deprecated).
    pub const PRIORITY: u8 = 0x2;
    /// RST_STREAM (§6.4).
    pub const RST_STREAM: u8 = 0x3;
    /// SETTINGS (§6.5).
    pub const SETTINGS: u8 = 0x4;
    /// PUSH_PROMISE (§6.6).
    pub const PUSH_PROMISE: u8 = 0x5;
    /// PING (§6.7).
    pub const PING: u8 = 0x6;
    /// GOAWAY (§6.8).
    pub const GOAWAY: u8 = 0x7;
    /// WINDOW_UPDATE (§6.9).
    pub const WINDOW_UPDATE: u8 = 0x8;
    /// CONTINUATION (§6.10).
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags (RFC 9113 §6).
pub mod flag {
    /// END_STREAM on DATA and HEADERS.
    pub const END_STREAM: u8 = 0x1;
    /// ACK on SETTINGS and PING.
    pub const ACK: u8 = 0x1;
    /// END_HEADERS on HEADERS, PUSH_PROMISE and CONTINUATION.
    pub const END_HEADERS: u8 = 0x4;
    /// PADDED on DATA, HEADERS and PUSH_PROMISE.
    pub const PADDED: u8 = 0x8;
    /// PRIORITY on HEADERS.
    pub const PRIORITY: u8 = 0x20;
}

/// SETTINGS parameter identifiers (RFC 9113 §6.5.2, RFC 8441 §3).
pub mod setting {
    /// SETTINGS_HEADER_TABLE_SIZE (bytes).
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    /// SETTINGS_ENABLE_PUSH (0 or 1).
    pub const ENABLE_PUSH: u16 = 0x2;
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    /// SETTINGS_INITIAL_WINDOW_SIZE (bytes).
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    /// SETTINGS_MAX_FRAME_SIZE (bytes).
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    /// SETTINGS_MAX_HEADER_LIST_SIZE (bytes, advisory).
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
    /// SETTINGS_ENABLE_CONNECT_PROTOCOL (0 or 1, RFC 8441).
    pub const ENABLE_CONNECT_PROTOCOL: u16 = 0x8;
}

/// Error codes carried by RST_STREAM and GOAWAY (RFC 9113 §7).
pub mod error {
    /// Graceful shutdown / no error.
    pub const NO_ERROR: u32 = 0x0;
    /// Generic protocol error.
    pub const PROTOCOL_ERROR: u32 = 0x1;
    /// Implementation fault.
    pub const INTERNAL_ERROR: u32 = 0x2;
    /// Flow-control limits exceeded.
    pub const FLOW_CONTROL_ERROR: u32 = 0x3;
    /// Frame received for a closed stream.
    pub const STREAM_CLOSED: u32 = 0x5;
    /// Frame size incorrect.
    pub const FRAME_SIZE_ERROR: u32 = 0x6;
    /// Stream not processed (safe to retry).
    pub const REFUSED_STREAM: u32 = 0x7;
    /// Stream cancelled.
    pub const CANCEL: u32 = 0x8;
    /// HPACK state broken.
    pub const COMPRESSION_ERROR: u32 = 0x9;
    /// Processing capacity exceeded.
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
}

/// A parsed frame header (RFC 9113 §4.1). `stream` has the reserved bit cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length in bytes (24 bits).
    pub length: u32,
    /// Frame type (see [`kind`]).
    pub kind: u8,
    /// Flags (see [`flag`]).
    pub flags: u8,
    /// Stream identifier (31 bits).
    pub stream: u32,
}

impl FrameHeader {
    /// Parses the 9 header bytes.
    pub fn parse(b: &[u8; FRAME_HEADER_LEN]) -> FrameHeader {
        FrameHeader {
            length: (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & MAX_STREAM_ID,
        }
    }

    /// True when flag bit(s) `f` are all set.
    pub fn has(&self, f: u8) -> bool {
        self.flags & f == f
    }
}

/// One complete frame: its header and its payload (exactly `header.length` bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The frame header.
    pub header: FrameHeader,
    /// The payload, padding included (shared with the input when it arrived whole).
    pub payload: Bytes,
    /// The payload shares the input buffer (else it has a buffer of its own).
    pub shared: bool,
}

/// Incremental frame reader: feed it byte slices of any size, get whole frames out.
///
/// Holds at most one partial frame (`9 + max_payload` bytes). A frame whose declared length exceeds
/// `max_payload` is reported as [`FrameTooLarge`] as soon as its header is complete (RFC 9113 §4.2:
/// FRAME_SIZE_ERROR).
#[derive(Debug)]
pub struct FrameReader {
    head: [u8; FRAME_HEADER_LEN],
    head_len: usize,
    header: Option<FrameHeader>,
    payload: Vec<u8>,
    max_payload: u32,
}

/// The declared payload length (bytes) of a frame that exceeds the reader's limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameTooLarge(pub u32);

impl FrameReader {
    /// A reader that accepts payloads up to `max_payload` bytes.
    pub fn new(max_payload: u32) -> FrameReader {
        FrameReader {
            head: [0; FRAME_HEADER_LEN],
            head_len: 0,
            header: None,
            payload: Vec::new(),
            max_payload,
        }
    }

    /// Bytes currently held for a partial frame.
    pub fn buffered(&self) -> usize {
        self.head_len + self.payload.len()
    }

    /// Takes bytes from the front of `input` until one frame is complete and returns it; returns
    /// `Ok(None)` when `input` ran out first (the partial frame is kept for the next call).
    pub fn pull(&mut self, input: &mut Bytes) -> Result<Option<Frame>, FrameTooLarge> {
        if self.header.is_none() {
            let want = FRAME_HEADER_LEN - self.head_len;
            let take = want.min(input.len());
            self.head[self.head_len..self.head_len + take].copy_from_slice(&input[..take]);
            self.head_len += take;
            input.advance(take);
            if self.head_len < FRAME_HEADER_LEN {
                return Ok(None);
            }
            let h = FrameHeader::parse(&self.head);
            if h.length > self.max_payload {
                return Err(FrameTooLarge(h.length));
            }
            self.header = Some(h);
        }
        let Some(h) = self.header else {
            return Ok(None);
        };
        let len = h.length as usize;
        let shared = self.payload.is_empty() && input.len() >= len;
        let payload = if shared {
            // The whole payload is in this input: share it.
            input.split_to(len)
        } else {
            if self.payload.capacity() == 0 {
                self.payload.reserve_exact(len);
            }
            let take = (len - self.payload.len()).min(input.len());
            self.payload.extend_from_slice(&input[..take]);
            input.advance(take);
            if self.payload.len() < len {
                return Ok(None);
            }
            Bytes::from(std::mem::take(&mut self.payload))
        };
        self.header = None;
        self.head_len = 0;
        Ok(Some(Frame { header: h, payload, shared }))
    }
}

/// Appends one frame (header and payload) to `out`. A payload longer than 2^24 - 1 bytes is cut to
/// that length (every caller in this module chunks first, so this never happens).
pub fn write_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len().min(MAX_MAX_FRAME_SIZE as usize);
    write_frame_header(out, len, kind, flags, stream);
    out.extend_from_slice(&payload[..len]);
}

/// Appends a 9-byte frame header announcing `len` payload bytes (cut to 24 bits); the caller
/// appends exactly that many payload bytes next.
pub fn write_frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    let len = len.min(MAX_MAX_FRAME_SIZE as usize);
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&(stream & MAX_STREAM_ID).to_be_bytes());
}

/// Appends a SETTINGS frame carrying `params` as (identifier, value) pairs (RFC 9113 §6.5.1).
pub fn write_settings(out: &mut Vec<u8>, params: &[(u16, u32)]) {
    let mut p = Vec::with_capacity(params.len() * 6);
    for (id, v) in params {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    write_frame(out, kind::SETTINGS, 0, 0, &p);
}

/// Appends an empty SETTINGS frame with the ACK flag.
pub fn write_settings_ack(out: &mut Vec<u8>) {
    write_frame(out, kind::SETTINGS, flag::ACK, 0, &[]);
}

/// Appends a WINDOW_UPDATE frame; `increment` must be 1..=2^31-1 (RFC 9113 §6.9).
pub fn write_window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    write_frame(
        out,
        kind::WINDOW_UPDATE,
        0,
        stream,
        &(increment & 0x7fff_ffff).to_be_bytes(),
    );
}

/// Appends an RST_STREAM frame with error `code` (RFC 9113 §6.4).
pub fn write_rst_stream(out: &mut Vec<u8>, stream: u32, code: u32) {
    write_frame(out, kind::RST_STREAM, 0, stream, &code.to_be_bytes());
}

/// Appends a GOAWAY frame (RFC 9113 §6.8); `debug` is opaque diagnostic data (kept short).
pub fn write_goaway(out: &mut Vec<u8>, last_stream: u32, code: u32, debug: &[u8]) {
    let mut p = Vec::with_capacity(8 + debug.len());
    p.extend_from_slice(&(last_stream & MAX_STREAM_ID).to_be_bytes());
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(&debug[..debug.len().min(256)]);
    write_frame(out, kind::GOAWAY, 0, 0, &p);
}

/// Appends a PING frame with 8 bytes of opaque data (RFC 9113 §6.7).
pub fn write_ping(out: &mut Vec<u8>, ack: bool, opaque: [u8; 8]) {
    write_frame(out, kind::PING, if ack { flag::ACK } else { 0 }, 0, &opaque);
}

/// Appends one DATA frame (no padding).
pub fn write_data(out: &mut Vec<u8>, stream: u32, end_stream: bool, data: &[u8]) {
    let flags = if end_stream { flag::END_STREAM } else { 0 };
    write_frame(out, kind::DATA, flags, stream, data);
}

/// Appends a header block as one HEADERS frame followed by as many CONTINUATION frames as needed
/// so that no payload exceeds `max_frame` bytes (RFC 9113 §6.2, §6.10). No padding, no priority.
pub fn write_header_block(
    out: &mut Vec<u8>,
    stream: u32,
    end_stream: bool,
    block: &[u8],
    max_frame: u32,
) {
    let max = (max_frame as usize).clamp(1, MAX_MAX_FRAME_SIZE as usize);
    let mut rest = block;
    let mut first = true;
    loop {
        let take = rest.len().min(max);
        let (chunk, tail) = rest.split_at(take);
        rest = tail;
        let mut flags = if rest.is_empty() {
            flag::END_HEADERS
        } else {
            0
        };
        let k = if first {
            if end_stream {
                flags |= flag::END_STREAM;
            }
            kind::HEADERS
        } else {
            kind::CONTINUATION
        };
        write_frame(out, k, flags, stream, chunk);
        first = false;
        if rest.is_empty() {
            break;
        }
    }
}

/// Removes padding from a DATA or HEADERS payload when PADDED is set (RFC 9113 §6.1, §6.2).
/// Returns `None` when the pad length is not smaller than the payload (a PROTOCOL_ERROR).
pub fn strip_padding(flags: u8, payload: &[u8]) -> Option<&[u8]> {
    let r = padding_range(flags, payload)?;
    Some(&payload[r])
}

/// The range of `payload` that [`strip_padding`] keeps.
pub fn padding_range(flags: u8, payload: &[u8]) -> Option<std::ops::Range<usize>> {
    if flags & flag::PADDED == 0 {
        return Some(0..payload.len());
    }
    let (&pad, rest) = payload.split_first()?;
    let pad = pad as usize;
    if pad > rest.len() {
        return None;
    }
    Some(1..1 + rest.len() - pad)
}
