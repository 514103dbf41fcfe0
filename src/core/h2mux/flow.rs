//! Moving data: opening queued streams on the tunnel, flushing pipes within the windows, and
//! crediting windows back.

use super::*;

impl Mux {
    // ----------------------------------------------------------------------------------------
    // Moving data: open queued streams, flush pipes, credit windows
    // ----------------------------------------------------------------------------------------

    /// Runs after every frame and API call: opens queued streams, forwards what the windows allow,
    /// sends due WINDOW_UPDATEs, and finishes a drained mux.
    pub(super) fn pump(&mut self) {
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

    pub(super) fn open_pending(&mut self) {
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

    pub(super) fn flush_dir(&mut self, dir: Dir) {
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
    pub(super) fn flush_one(&mut self, key: StreamKey, dir: Dir) -> bool {
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
                        out.push((*id, sid, LocalFrame::Data { bytes: Bytes::new(), end }));
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
                            out.push((*id, sid, LocalFrame::Data { bytes: bytes.take(n), end: es }));
                        } else {
                            frame::write_frame_header(
                                &mut conn.out,
                                n,
                                kind::DATA,
                                if es { flag::END_STREAM } else { 0 },
                                sid,
                            );
                            if dir == Dir::ToTunnel && n >= OWN_PART_MIN {
                                conn.push_payload(bytes.take(n));
                            } else {
                                bytes.take_into(n, &mut conn.out);
                            }
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
    pub(super) fn send_credits(&mut self) {
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
        // Local legs have no connection-level flow control (their windows are unlimited).
        for id in &self.wire {
            if let Some(eg) = self.egresses.get_mut(id) {
                credit(&mut eg.conn);
            }
        }
    }
}
