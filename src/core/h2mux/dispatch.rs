//! Frame dispatch: what each HTTP/2 frame read on a leg does to the streams and windows.

use super::*;

impl Mux {
    // ----------------------------------------------------------------------------------------
    // Frame dispatch
    // ----------------------------------------------------------------------------------------

    pub(super) fn conn(&mut self, leg: Leg) -> Option<&mut Conn> {
        match leg {
            Leg::Tunnel => Some(&mut self.tunnel.conn),
            Leg::Egress(e) => self.egresses.get_mut(&e).map(|x| &mut x.conn),
        }
    }

    pub(super) fn lookup(&self, leg: Leg, sid: u32) -> Lookup {
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

    pub(super) fn leg_frame(&mut self, leg: Leg, f: Frame) -> Result<(), ConnError> {
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
        if h.kind == kind::DATA {
            let backing = if f.shared { self.input_len } else { 0 };
            return self.on_data(leg, h, f.payload, backing);
        }
        let p = &f.payload[..];
        match h.kind {
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

    /// A DATA frame; its payload shares a buffer of `backing` bytes (0: a buffer of its own).
    pub(super) fn on_data(&mut self, leg: Leg, h: FrameHeader, payload: Bytes, backing: usize) -> Result<(), ConnError> {
        if h.stream == 0 {
            return Err(cerr(error::PROTOCOL_ERROR, "DATA on stream 0"));
        }
        let body = frame::padding_range(h.flags, &payload)
            .map(|r| payload.slice(r))
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
            conn.received(flow);
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
        pipe.received(flow);
        // Response bytes for a local leg, with nothing queued ahead of them and credit for all of
        // them, are handed over at once: what flush_one would do with them next, minus the queue.
        let local = if from_egress || dest_closed {
            None
        } else {
            self.egresses.get_mut(&s.egress).filter(|eg| eg.local)
        };
        let n = body.len() as i64;
        if let Some(eg) = local.filter(|eg| {
            n > 0
                && pipe.items.is_empty()
                && pipe.reset_after.is_none()
                && n <= pipe.send_window
                && n <= eg.conn.send_window
                && n <= i64::from(eg.conn.peer_max_frame)
        }) {
            eg.conn.send_window -= n;
            pipe.send_window -= n;
            pipe.sent_end |= end;
            if end {
                pipe.end_received = true;
            }
            self.local_out.push((s.egress, s.egress_sid, LocalFrame::Data { bytes: body, end }));
            self.credit_dirty.insert(key);
            if end {
                self.settle(key);
            }
            return Ok(());
        }
        let mut queued = 0;
        if !dest_closed && (!body.is_empty() || end) {
            queued = body.len();
            pipe.push_data(body, backing, end);
            if backing > 0 {
                self.pinned.push(key);
            }
        }
        if end {
            pipe.end_received = true;
        }
        if let Some(conn) = self.conn(leg) {
            conn.buffered_in += queued;
        }
        self.credit_dirty.insert(key);
        self.queued(key, from_egress, end);
        Ok(())
    }

    pub(super) fn on_headers(&mut self, leg: Leg, h: FrameHeader, payload: &[u8]) -> Result<(), ConnError> {
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

    pub(super) fn on_continuation(
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

    pub(super) fn on_header_block(
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

    pub(super) fn new_request(&mut self, egress: EgressId, sid: u32, decoded: hpack::DecodedBlock, end: bool) {
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

    pub(super) fn forward_headers(
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
        self.queued(key, from_egress, end);
    }

    /// Stream `key` has something new queued toward the other leg (toward the tunnel when it came
    /// from its egress): it joins that direction's flush set; with `end` its end was received.
    fn queued(&mut self, key: StreamKey, from_egress: bool, end: bool) {
        if from_egress {
            self.flush_tunnel.insert(key);
        } else {
            self.flush_egress.insert(key);
        }
        if end {
            self.settle(key);
        }
    }

    pub(super) fn on_priority(&mut self, leg: Leg, h: FrameHeader, payload: &[u8]) -> Result<(), ConnError> {
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

    pub(super) fn on_rst(&mut self, leg: Leg, h: FrameHeader, payload: &[u8]) -> Result<(), ConnError> {
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

    pub(super) fn on_settings(&mut self, leg: Leg, h: FrameHeader, payload: &[u8]) -> Result<(), ConnError> {
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

    pub(super) fn on_ping(&mut self, leg: Leg, h: FrameHeader, payload: &[u8]) -> Result<(), ConnError> {
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

    pub(super) fn on_goaway(&mut self, leg: Leg, h: FrameHeader, payload: &[u8]) -> Result<(), ConnError> {
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

    pub(super) fn on_window_update(
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
}
