//! What the adapters ask of Envoy, as traits: the seam between adapter logic and the FFI.
//!
//! Adapter code never calls a concrete FFI handle directly; it calls these traits. In the module
//! they are implemented by the safe wrappers of [`crate::ffi::envoy`] (below, by delegation); in
//! unit tests by the recording fakes of `adapters::fake`, so that every adapter can be driven
//! hook by hook and its Envoy calls checked. Any new adapter (an HTTP filter, say) adds its own
//! trait here next to these and reuses the network one where it talks to a connection.
//!
//! Threading is the FFI's (docs/envoy-abi.md#threads): a network filter handle may only be used
//! on the worker that owns its connection, between the filter's `new` and `destroy` hooks.

use super::endpoint::Sched;
use crate::ffi::envoy::{BootstrapConfigHandle, BootstrapTimer, CalloutInitError, CloseType, NetFilter};
use crate::ffi::envoy_http::HttpFilter;

/// The Envoy side of one network-filter connection (`envoy_dynamic_module_callback_network_*`,
/// docs/envoy-abi.md#network-filter-callbacks). Owning worker only.
pub trait EnvoyNetworkFilter {
    /// Appends the whole read buffer to `out`; returns the number of bytes.
    fn read_into(&self, out: &mut Vec<u8>) -> usize;
    /// Removes `len` bytes from the front of the read buffer.
    fn drain_read(&self, len: usize);
    /// Writes `data` to the connection (Envoy copies it).
    fn write(&self, data: &[u8], end_stream: bool);
    /// Closes the connection with `details` as its termination details. Envoy may run this
    /// connection's `event` hook inside the call.
    fn close(&self, how: CloseType, details: &str);
    /// Makes sure reads are enabled.
    fn ensure_reading(&self);
    /// Envoy's connection id (unique per process).
    fn connection_id(&self) -> u64;
    /// 0-based index of the owning worker.
    fn worker_index(&self) -> u32;
    /// The peer's `ip:port`, or "" for a non-IP peer.
    fn remote_address(&self) -> String;
    /// This side's `ip:port`, or "" for a non-IP socket.
    fn local_address(&self) -> String;
    /// True if the connection runs TLS.
    fn is_ssl(&self) -> bool;
    /// The connection's filter state object under `key` as bytes; None if absent.
    fn filter_state(&self, key: &str) -> Option<Vec<u8>>;
    /// Sets a string in the connection's dynamic metadata under `namespace`.
    fn set_metadata(&self, namespace: &str, key: &str, value: &str);
    /// Our own duplicate of the connection's socket, for moving a spare tunnel to a socket loop:
    /// Some only when listener filter `reverse_tunnel_spares` noted the socket at accept (and
    /// once per connection). Envoy's descriptor stays open until the connection closes.
    fn take_socket(&self) -> Option<std::net::TcpStream>;
    /// Creates the connection's scheduler (its events run the `scheduled` hook on this worker;
    /// for a socket the module owns, the socket loop's delivery of the connection's mail).
    fn scheduler_new(&self) -> Sched;
}

impl EnvoyNetworkFilter for NetFilter {
    fn read_into(&self, out: &mut Vec<u8>) -> usize {
        NetFilter::read_into(*self, out)
    }
    fn drain_read(&self, len: usize) {
        NetFilter::drain_read(*self, len)
    }
    fn write(&self, data: &[u8], end_stream: bool) {
        NetFilter::write(*self, data, end_stream)
    }
    fn close(&self, how: CloseType, details: &str) {
        NetFilter::close(*self, how, details)
    }
    fn ensure_reading(&self) {
        NetFilter::ensure_reading(*self)
    }
    fn connection_id(&self) -> u64 {
        NetFilter::connection_id(*self)
    }
    fn worker_index(&self) -> u32 {
        NetFilter::worker_index(*self)
    }
    fn remote_address(&self) -> String {
        NetFilter::remote_address(*self)
    }
    fn local_address(&self) -> String {
        NetFilter::local_address(*self)
    }
    fn is_ssl(&self) -> bool {
        NetFilter::is_ssl(*self)
    }
    fn filter_state(&self, key: &str) -> Option<Vec<u8>> {
        NetFilter::filter_state(*self, key)
    }
    fn set_metadata(&self, namespace: &str, key: &str, value: &str) {
        NetFilter::set_metadata(*self, namespace, key, value)
    }
    fn take_socket(&self) -> Option<std::net::TcpStream> {
        NetFilter::take_socket(*self)
    }
    fn scheduler_new(&self) -> Sched {
        Sched::Net(NetFilter::scheduler_new(*self))
    }
}

/// The Envoy side of the bootstrap extension config (`envoy_dynamic_module_callback_bootstrap_*`,
/// docs/envoy-abi.md#bootstrap-callbacks). Main thread only. Metrics go through
/// [`crate::stats::MetricSink`] instead.
pub trait EnvoyBootstrap {
    /// Unblocks Envoy's init manager (once).
    fn signal_init_complete(&self);
    /// A new, disarmed one-shot timer firing `timer_fired`.
    fn timer_new(&self) -> Box<dyn EnvoyTimer>;
    /// Registers an admin handler for the exact path `path`; false if refused.
    fn register_admin_handler(&self, path: &str, help: &str) -> bool;
    /// Starts an HTTP request to cluster `cluster`; its result arrives in `http_callout_done`.
    fn http_callout(&self, cluster: &str, headers: &[(&str, &str)], body: &[u8], timeout_ms: u64) -> Result<u64, CalloutInitError>;
}

/// A main-thread one-shot timer of the bootstrap extension.
pub trait EnvoyTimer {
    /// Arms the timer to fire after `delay_ms`.
    fn enable(&self, delay_ms: u64);
    /// Frees the timer (once).
    fn delete(&self);
}

impl EnvoyBootstrap for BootstrapConfigHandle {
    fn signal_init_complete(&self) {
        BootstrapConfigHandle::signal_init_complete(*self)
    }
    fn timer_new(&self) -> Box<dyn EnvoyTimer> {
        Box::new(BootstrapConfigHandle::timer_new(*self))
    }
    fn register_admin_handler(&self, path: &str, help: &str) -> bool {
        BootstrapConfigHandle::register_admin_handler(*self, path, help)
    }
    fn http_callout(&self, cluster: &str, headers: &[(&str, &str)], body: &[u8], timeout_ms: u64) -> Result<u64, CalloutInitError> {
        BootstrapConfigHandle::http_callout(*self, cluster, headers, body, timeout_ms)
    }
}

impl EnvoyTimer for BootstrapTimer {
    fn enable(&self, delay_ms: u64) {
        BootstrapTimer::enable(*self, delay_ms)
    }
    fn delete(&self) {
        BootstrapTimer::delete(*self)
    }
}

/// The Envoy side of one HTTP stream of the route filter (`envoy_dynamic_module_callback_http_*`,
/// docs/envoy-abi.md#http-filter). The stream's worker only, between `new` and `destroy`.
pub trait EnvoyHttpFilter {
    /// Every request header (pseudo-headers included), copied.
    fn request_headers(&self) -> Vec<(Vec<u8>, Vec<u8>)>;
    /// Every request trailer, copied.
    fn request_trailers(&self) -> Vec<(Vec<u8>, Vec<u8>)>;
    /// Moves the current `request_body` hook's chunk into `out`; returns its length.
    fn take_received_request_body(&self, out: &mut Vec<u8>) -> usize;
    /// Shows `use_body` the current `request_body` hook's chunk where Envoy holds it (its slices,
    /// in order, valid during the call only); if `use_body` returns true the chunk is drained
    /// from Envoy (taken, as by `take_received_request_body`). Returns what `use_body` returned.
    fn use_received_request_body(&self, use_body: &mut dyn FnMut(&[&[u8]]) -> bool) -> bool;
    /// Bytes of request body Envoy holds for the filter (chunks earlier `request_body` hooks left
    /// buffered by answering `StopIterationAndWatermark`).
    fn buffered_request_body_len(&self) -> usize;
    /// Moves up to `max` bytes from the front of that buffered body into `out` (draining them
    /// from Envoy, which resumes reading from the client below its low watermark); returns how
    /// many.
    fn take_buffered_request_body(&self, out: &mut Vec<u8>, max: usize) -> usize;
    /// A whole local reply.
    fn send_local_reply(&self, status: u32, headers: &[(&[u8], &[u8])], body: &[u8], details: &str);
    /// Response headers (with `:status`); `end` ends the response.
    fn send_response_headers(&self, headers: &[(&[u8], &[u8])], end: bool);
    /// A response body chunk; `end` ends the response.
    fn send_response_data(&self, data: &[u8], end: bool);
    /// Response trailers (end the response).
    fn send_response_trailers(&self, trailers: &[(&[u8], &[u8])]);
    /// Resets the client's stream.
    fn reset(&self, details: &str);
}

impl EnvoyHttpFilter for HttpFilter {
    fn request_headers(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        HttpFilter::request_headers(*self)
    }
    fn request_trailers(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        HttpFilter::request_trailers(*self)
    }
    fn take_received_request_body(&self, out: &mut Vec<u8>) -> usize {
        HttpFilter::take_received_request_body(*self, out)
    }
    fn use_received_request_body(&self, use_body: &mut dyn FnMut(&[&[u8]]) -> bool) -> bool {
        HttpFilter::use_received_request_body(*self, use_body)
    }
    fn buffered_request_body_len(&self) -> usize {
        HttpFilter::buffered_request_body_len(*self)
    }
    fn take_buffered_request_body(&self, out: &mut Vec<u8>, max: usize) -> usize {
        HttpFilter::take_buffered_request_body(*self, out, max)
    }
    fn send_local_reply(&self, status: u32, headers: &[(&[u8], &[u8])], body: &[u8], details: &str) {
        HttpFilter::send_local_reply(*self, status, headers, body, details)
    }
    fn send_response_headers(&self, headers: &[(&[u8], &[u8])], end: bool) {
        HttpFilter::send_response_headers(*self, headers, end)
    }
    fn send_response_data(&self, data: &[u8], end: bool) {
        HttpFilter::send_response_data(*self, data, end)
    }
    fn send_response_trailers(&self, trailers: &[(&[u8], &[u8])]) {
        HttpFilter::send_response_trailers(*self, trailers)
    }
    fn reset(&self, details: &str) {
        HttpFilter::reset(*self, details)
    }
}
