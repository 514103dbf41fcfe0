//! The local-leg API of the multiplexer: an in-process client (the HTTP request path) opens
//! streams with header lists and body chunks and receives `LocalFrame`s, under per-stream credit.

use super::*;

impl Mux {
    /// A local (in-process) egress leg joins: a client that opens streams with
    /// [`Mux::local_open`], sends with [`Mux::local_data`] / [`Mux::local_trailers`], cancels with
    /// [`Mux::local_cancel`], and receives [`Output::to_local`] frames as far as its
    /// [`Mux::local_credit`] allows (its flow control: at most `initial_window` bytes per stream
    /// before the first credit). No bytes are exchanged with it and no HPACK runs on its side.
    /// On a finished mux it is closed at once; on a draining mux its streams are refused.
    pub fn attach_local(&mut self, egress: EgressId) -> Output {
        if let Some(closed) = self.begin_attach(egress) {
            return closed;
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
        self.new_request(egress, sid, as_block(fields), end);
        self.pump();
        self.collect()
    }

    /// Request body bytes of stream `sid` of local leg `egress`; at most
    /// [`Mux::local_send_window`] bytes (more is a stream error: FLOW_CONTROL_ERROR). `end` ends
    /// the request. Unknown or closed streams are ignored.
    pub fn local_data(&mut self, egress: EgressId, sid: u32, data: &[u8], end: bool) -> Output {
        self.local_data_owned(egress, sid, Bytes::copy_from_slice(data), end)
    }

    /// [`Mux::local_data`] for bytes the caller owns: they are queued without a copy.
    pub fn local_data_owned(&mut self, egress: EgressId, sid: u32, data: Bytes, end: bool) -> Output {
        if self.dead || !matches!(self.lookup(Leg::Egress(egress), sid), Lookup::Open(_)) {
            return self.collect();
        }
        let h = FrameHeader {
            length: data.len() as u32,
            kind: kind::DATA,
            flags: if end { flag::END_STREAM } else { 0 },
            stream: sid,
        };
        if let Err(e) = self.on_data(Leg::Egress(egress), h, data, 0) {
            self.egress_conn_error(egress, e);
        }
        self.pump();
        self.collect()
    }

    /// Request body bytes of stream `sid` of local leg `egress` that the caller writes to the
    /// tunnel itself, straight from where they are (no copy into the mux). Taken only when the
    /// stream has nothing queued toward the tunnel and every window takes all `n` bytes as one
    /// DATA frame (at most the initiator's MAX_FRAME_SIZE); the request does not end here. Then
    /// the windows and credits move exactly as if [`Mux::local_data_owned`] had sent the bytes,
    /// and the returned output ends with that frame's 9-byte header: the caller writes it, then
    /// the `n` payload bytes right after it, before anything else reaches the tunnel. `None`:
    /// not taken, nothing changed (send them with [`Mux::local_data_owned`]).
    pub fn local_data_inline(&mut self, egress: EgressId, sid: u32, n: usize) -> Option<Output> {
        if self.dead || n == 0 || n > self.tunnel.conn.peer_max_frame as usize {
            return None;
        }
        let Lookup::Open(key) = self.lookup(Leg::Egress(egress), sid) else { return None };
        let flow = n as i64;
        let leg = self.egresses.get_mut(&egress)?;
        let s = self.streams.get_mut(&key)?;
        let up = &mut s.up;
        let t = s.tunnel_sid.filter(|_| !s.tunnel_closed && !up.end_received)?;
        let idle = up.items.is_empty() && up.reset_after.is_none();
        let windows = flow <= up.recv_window
            && flow <= up.send_window
            && flow <= self.tunnel.conn.send_window
            && flow <= leg.conn.recv_window;
        if !(leg.local && idle && windows) {
            return None;
        }
        // What on_data does for arriving bytes, then what flush_one does for sending them.
        leg.conn.received(n);
        up.received(n);
        up.send_window -= flow;
        self.tunnel.conn.send_window -= flow;
        self.credit_dirty.insert(key);
        self.pump();
        frame::write_frame_header(&mut self.tunnel.conn.out, n, kind::DATA, 0, t);
        Some(self.collect())
    }

    /// Request trailers of stream `sid` of local leg `egress` (ends the request).
    pub fn local_trailers(&mut self, egress: EgressId, sid: u32, fields: Vec<HeaderField>) -> Output {
        if self.dead {
            return self.collect();
        }
        if let Lookup::Open(key) = self.lookup(Leg::Egress(egress), sid) {
            self.forward_headers(key, Leg::Egress(egress), as_block(fields), true);
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
}

/// A local leg's header list as if decoded from the wire: sized as RFC 9113 §6.5.2 counts it, and
/// oversize above [`MAX_HEADER_LIST_SIZE`] (the same cap as on the wire legs).
fn as_block(fields: Vec<HeaderField>) -> hpack::DecodedBlock {
    let list_size = fields.iter().map(HeaderField::size).sum();
    hpack::DecodedBlock { oversize: list_size > MAX_HEADER_LIST_SIZE, list_size, fields }
}
