//! Output collection, connection errors, shutdown and draining, and the lifecycle of one stream
//! (errors, resets, settling once both legs are closed).

use super::*;

impl Mux {
    // ----------------------------------------------------------------------------------------
    // Output collection and shutdown
    // ----------------------------------------------------------------------------------------

    pub(super) fn collect(&mut self) -> Output {
        // Payloads still queued at the end of the call must not keep much larger reads alive.
        for key in std::mem::take(&mut self.pinned) {
            if let Some(s) = self.streams.get_mut(&key) {
                s.up.compact();
                s.down.compact();
            }
        }
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
        // Local legs are skipped: what the mux writes for them (WINDOW_UPDATEs, a GOAWAY) means
        // nothing to an in-process client, and a local leg serves one request, so those few
        // bytes go when it is detached.
        for id in &self.wire {
            let Some(eg) = self.egresses.get_mut(id) else { continue };
            if !eg.conn.out.is_empty() {
                let bytes = std::mem::take(&mut eg.conn.out);
                match to_egress.iter_mut().find(|(e, _)| e == id) {
                    Some((_, b)) => b.extend_from_slice(&bytes),
                    None => to_egress.push((*id, bytes)),
                }
            }
        }
        let (tunnel_parts, to_tunnel) = self.tunnel.conn.take_output();
        Output {
            tunnel_parts,
            to_tunnel,
            to_local: std::mem::take(&mut self.local_out),
            to_egress,
            close_egress: std::mem::take(&mut self.close_egress),
            close_tunnel: std::mem::replace(&mut self.close_tunnel, false),
            events: std::mem::take(&mut self.events),
        }
    }

    /// The start of [`Mux::attach`] and [`Mux::attach_local`]: on a finished mux the egress is
    /// closed at once (the returned output says so); an id already attached is dropped first.
    pub(super) fn begin_attach(&mut self, egress: EgressId) -> Option<Output> {
        if self.dead {
            self.close_egress.push(egress);
            return Some(self.collect());
        }
        if self.egresses.contains_key(&egress) {
            self.drop_egress(egress);
        }
        None
    }

    /// Forgets an egress: its streams are reset on the tunnel (CANCEL) or dropped from the queue.
    /// Its pending output is discarded (the caller moves it to `orphan_out` first when needed).
    pub(super) fn drop_egress(&mut self, egress: EgressId) {
        self.wire.remove(&egress);
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

    pub(super) fn egress_conn_error(&mut self, egress: EgressId, e: ConnError) {
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

    pub(super) fn tunnel_conn_error(&mut self, e: ConnError) {
        frame::write_goaway(&mut self.tunnel.conn.out, 0, e.code, e.detail.as_bytes());
        self.events.push(MuxEvent::ProtocolError {
            leg: Leg::Tunnel,
            detail: e.detail,
        });
        self.shutdown(true);
    }

    /// Ends everything: egress streams are reset, egresses get GOAWAY and are closed; the tunnel is
    /// closed when `close_tunnel`.
    pub(super) fn shutdown(&mut self, close_tunnel: bool) {
        self.dead = true;
        self.close_tunnel = close_tunnel;
        let egresses = std::mem::take(&mut self.egresses);
        self.wire.clear();
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
    pub(super) fn start_draining(&mut self) {
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
    // Stream lifecycle
    // ----------------------------------------------------------------------------------------

    /// A stream error caused by `leg`: that leg gets RST_STREAM(`code`), the other leg CANCEL
    /// (tunnel) or INTERNAL_ERROR (egress).
    pub(super) fn stream_error(&mut self, key: StreamKey, leg: Leg, code: u32) {
        if leg == Leg::Tunnel {
            self.reset_stream(key, Some(error::INTERNAL_ERROR), Some(code), code);
        } else {
            self.reset_stream(key, Some(code), Some(error::CANCEL), code);
        }
    }

    /// Resets a stream on both legs (sending RST_STREAM with the given codes to legs where it is
    /// still open; `None` = the leg already knows) and forgets it.
    pub(super) fn reset_stream(
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
    pub(super) fn settle(&mut self, key: StreamKey) {
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
}
