//! Why a tunnel ended: the one vocabulary of `close_reason` (the `tunnel_closed` lifecycle
//! event, the `tunnels_closed{close_reason}` counter, the reporter's `disconnected` events and the
//! connection's termination details; docs/protocol.md#closing-a-tunnel).

/// Why a tunnel (an accepted handshake connection) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// Idle: `ping_failure_threshold` consecutive RPING misses.
    IdlePingTimeout,
    /// Idle: the initiator closed the connection.
    IdlePeerClose,
    /// Idle: reading the tunnel failed.
    IdleReadError,
    /// Idle: writing an RPING failed.
    IdlePingWriteFailure,
    /// Idle: closed because Envoy started draining (ours; the built-in has no such reason).
    Drain,
    /// In use: the initiator closed the connection.
    RemoteClose,
    /// Closed by Envoy on this side (e.g. shutdown) without a reason of ours.
    LocalClose,
    /// In use: `ping_failure_threshold` HTTP/2 PINGs went unanswered.
    Http2PingTimeout,
    /// In use: the (last) egress connection closed and the tunnel cannot be reused.
    EgressClosed,
    /// In use: the initiator broke the HTTP/2 protocol.
    ProtocolError,
}

impl CloseReason {
    /// The `close_reason` text, e.g. `idle_ping_timeout`.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::IdlePingTimeout => "idle_ping_timeout",
            CloseReason::IdlePeerClose => "idle_peer_close",
            CloseReason::IdleReadError => "idle_read_error",
            CloseReason::IdlePingWriteFailure => "idle_ping_write_failure",
            CloseReason::Drain => "drain",
            CloseReason::RemoteClose => "remote_close",
            CloseReason::LocalClose => "local_close",
            CloseReason::Http2PingTimeout => "http2_ping_timeout",
            CloseReason::EgressClosed => "egress_closed",
            CloseReason::ProtocolError => "reverse_tunnel_protocol_error",
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
