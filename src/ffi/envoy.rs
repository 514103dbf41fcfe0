//! Safe wrappers over the Envoy 1.40.0 callbacks this module calls (docs/envoy-abi.md).
//!
//! Threading (docs/envoy-abi.md#threads): a [`NetFilter`] may only be used on the worker that owns its
//! connection; [`NetScheduler::commit`], metric updates on [`BootstrapConfigHandle`] and logging
//! work from any thread; timers, admin and init calls are main-thread only.
//!
//! In unit tests (no Envoy in the process) the callbacks are not linked: every wrapper becomes a
//! no-op there (see the `#[cfg(test)]` shims at the bottom), so pure logic can be tested.

#![allow(clippy::not_unsafe_ptr_arg_deref)]

use envoy_abi as abi;
use std::os::raw::c_void;

/// Envoy's log levels (`envoy_dynamic_module_type_log_level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
}

pub(crate) fn mbuf(s: &[u8]) -> abi::envoy_dynamic_module_type_module_buffer {
    abi::envoy_dynamic_module_type_module_buffer { ptr: s.as_ptr() as *const _, length: s.len() }
}

/// Borrows bytes Envoy owns; empty for a null pointer. Valid only while Envoy keeps them alive
/// (the duration of the hook, docs/envoy-abi.md#buffers-pointers-and-enums).
///
/// # Safety
/// `b.ptr` must be null or point to `b.length` readable bytes.
pub unsafe fn envoy_bytes<'a>(b: &abi::envoy_dynamic_module_type_envoy_buffer) -> &'a [u8] {
    if b.ptr.is_null() || b.length == 0 {
        &[]
    } else {
        // SAFETY: the caller guarantees ptr/length describe live bytes.
        unsafe { std::slice::from_raw_parts(b.ptr as *const u8, b.length) }
    }
}

/// Appends the bytes of Envoy's buffer `chunks`, in order, to `out`, at most `max` of them, in
/// one allocation (growing chunk by chunk would copy them again); returns how many it appended.
///
/// # Safety
/// Every chunk must satisfy [`envoy_bytes`]'s contract.
pub(crate) unsafe fn append_chunks(
    chunks: &[abi::envoy_dynamic_module_type_envoy_buffer],
    out: &mut Vec<u8>,
    max: usize,
) -> usize {
    out.reserve(chunks.iter().map(|c| c.length).sum::<usize>().min(max));
    let mut total = 0;
    for c in chunks {
        // SAFETY: per the contract above.
        let b = unsafe { envoy_bytes(c) };
        let take = b.len().min(max - total);
        out.extend_from_slice(&b[..take]);
        total += take;
        if total == max {
            break;
        }
    }
    total
}

pub(crate) const EMPTY_ENVOY_BUF: abi::envoy_dynamic_module_type_envoy_buffer =
    abi::envoy_dynamic_module_type_envoy_buffer { ptr: std::ptr::null(), length: 0 };

// ---------------------------------------------------------------------------------------------
// Logging (any thread)
// ---------------------------------------------------------------------------------------------

/// True if Envoy's `dynamic_modules` logger would print `level`.
pub fn log_enabled(level: LogLevel) -> bool {
    // SAFETY: plain value call, any thread (docs/envoy-abi.md#threads).
    unsafe { shim::log_enabled(level as u32) }
}

/// Writes one log line (`[dynamic_modules] [file:line] msg`) at `level`.
pub fn log(level: LogLevel, msg: &str, file: &str, line: u32) {
    // SAFETY: buffers are copied by Envoy before the call returns (docs/envoy-abi.md#buffers-pointers-and-enums).
    unsafe { shim::log_v2(level as u32, mbuf(msg.as_bytes()), mbuf(file.as_bytes()), line) }
}

/// Envoy runtime value `key` (from `layered_runtime`) as a bool, or `default`.
/// Under `envoy --mode validate` Envoy has no runtime: `default` without calling Envoy
/// ([`crate::ffi::envoy_mode`]).
pub fn runtime_bool(key: &str, default: bool) -> bool {
    if crate::ffi::envoy_mode::validating() {
        return default;
    }
    // SAFETY: the key buffer lives for the call.
    unsafe { shim::get_runtime_bool(mbuf(key.as_bytes()), default) }
}

/// Reads an integer Envoy runtime value (`layered_runtime`), `default` when unset or not a
/// number. Any thread (docs/envoy-abi.md#buffers-pointers-and-enums). Under
/// `envoy --mode validate` Envoy has no runtime: `default` without calling Envoy
/// ([`crate::ffi::envoy_mode`]).
pub fn runtime_u64(key: &str, default: u64) -> u64 {
    if crate::ffi::envoy_mode::validating() {
        return default;
    }
    // SAFETY: the key buffer lives for the call.
    unsafe { shim::get_runtime_int(mbuf(key.as_bytes()), default) }
}

/// Worker count (`--concurrency`). Main thread only.
pub fn concurrency() -> u32 {
    // SAFETY: main-thread call made from bootstrap config_new.
    unsafe { shim::get_concurrency() }
}

// ---------------------------------------------------------------------------------------------
// Bootstrap extension config (docs/envoy-abi.md#bootstrap-callbacks)
// ---------------------------------------------------------------------------------------------

/// The bootstrap extension config's Envoy pointer. Valid from `config_new` until
/// `config_destroy`. Metric updates are thread-safe; everything else is main-thread only.
#[derive(Clone, Copy, Debug)]
pub struct BootstrapConfigHandle(pub usize);

/// Kind of a metric to define.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// A metric update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricOp {
    IncCounter,
    SetGauge,
    IncGauge,
    DecGauge,
    Record,
}

impl BootstrapConfigHandle {
    fn ptr(self) -> *mut c_void {
        self.0 as *mut c_void
    }

    /// Defines a metric named `<metrics_namespace>.<name>` with tag names `labels`; returns its
    /// id, or the raw `metrics_result` on failure. Only valid during `config_new` (docs/envoy-abi.md#bootstrap-callbacks).
    pub fn define(self, kind: MetricKind, name: &str, labels: &[&str]) -> Result<usize, u32> {
        let lbl: Vec<_> = labels.iter().map(|l| mbuf(l.as_bytes())).collect();
        let lp = if lbl.is_empty() { std::ptr::null_mut() } else { lbl.as_ptr() as *mut _ };
        let mut id = 0usize;
        // SAFETY: main thread during config_new; buffers live for the call.
        let rc = unsafe {
            match kind {
                MetricKind::Counter => shim::define_counter(self.ptr(), mbuf(name.as_bytes()), lp, lbl.len(), &mut id),
                MetricKind::Gauge => shim::define_gauge(self.ptr(), mbuf(name.as_bytes()), lp, lbl.len(), &mut id),
                MetricKind::Histogram => shim::define_histogram(self.ptr(), mbuf(name.as_bytes()), lp, lbl.len(), &mut id),
            }
        };
        if rc == 0 {
            Ok(id)
        } else {
            Err(rc)
        }
    }

    /// Applies `op` with `value` to metric `id` with `label_values` (same count as defined).
    /// Any thread. Returns false if Envoy refused the update.
    pub fn update(self, op: MetricOp, id: usize, label_values: &[&str], value: u64) -> bool {
        let lbl: Vec<_> = label_values.iter().map(|l| mbuf(l.as_bytes())).collect();
        let lp = if lbl.is_empty() { std::ptr::null_mut() } else { lbl.as_ptr() as *mut _ };
        // SAFETY: stats are atomic in Envoy; callable from any thread (docs/envoy-abi.md#threads).
        let rc = unsafe {
            match op {
                MetricOp::IncCounter => shim::increment_counter(self.ptr(), id, lp, lbl.len(), value),
                MetricOp::SetGauge => shim::set_gauge(self.ptr(), id, lp, lbl.len(), value),
                MetricOp::IncGauge => shim::increment_gauge(self.ptr(), id, lp, lbl.len(), value),
                MetricOp::DecGauge => shim::decrement_gauge(self.ptr(), id, lp, lbl.len(), value),
                MetricOp::Record => shim::record_histogram(self.ptr(), id, lp, lbl.len(), value),
            }
        };
        rc == 0
    }

    /// Unblocks Envoy's init manager (must be called once, docs/envoy-abi.md#bootstrap-callbacks). Main thread.
    pub fn signal_init_complete(self) {
        // SAFETY: main thread.
        unsafe { shim::signal_init_complete(self.ptr()) }
    }

    /// Creates a one-shot main-thread timer (fires `timer_fired`). Main thread.
    pub fn timer_new(self) -> BootstrapTimer {
        // SAFETY: main thread.
        BootstrapTimer(unsafe { shim::timer_new(self.ptr()) } as usize)
    }

    /// Registers an admin handler for the exact path `path`. Main thread, after
    /// `server_initialized`. False if admin is absent or the path is taken.
    pub fn register_admin_handler(self, path: &str, help: &str) -> bool {
        // SAFETY: main thread.
        unsafe { shim::register_admin_handler(self.ptr(), mbuf(path.as_bytes()), mbuf(help.as_bytes()), false, false) }
    }

    /// Starts an HTTP request to the Envoy cluster `cluster` (docs/envoy-abi.md#bootstrap-callbacks
    /// `bootstrap_extension_http_callout`): `headers` must include `:method`, `:path` and `host`;
    /// `timeout_ms` bounds the whole exchange. Main thread, only after `server_initialized`
    /// (before it Envoy answers ClusterNotFound). Returns the callout id, whose result arrives
    /// in the `http_callout_done` hook on the main thread, or why it could not start.
    pub fn http_callout(
        self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u64, CalloutInitError> {
        let mut hdrs: Vec<abi::envoy_dynamic_module_type_module_http_header> = headers
            .iter()
            .map(|(k, v)| abi::envoy_dynamic_module_type_module_http_header {
                key_ptr: k.as_ptr() as *const _,
                key_length: k.len(),
                value_ptr: v.as_ptr() as *const _,
                value_length: v.len(),
            })
            .collect();
        let mut id = 0u64;
        // SAFETY: main thread; every buffer lives for the call and Envoy copies them (docs/envoy-abi.md#buffers-pointers-and-enums).
        let rc = unsafe {
            shim::http_callout(self.ptr(), &mut id, mbuf(cluster.as_bytes()), hdrs.as_mut_ptr(), hdrs.len(), mbuf(body), timeout_ms)
        };
        if rc == abi::envoy_dynamic_module_type_http_callout_init_result::Success {
            Ok(id)
        } else {
            Err(CalloutInitError::from_abi(rc))
        }
    }

    /// Sets the body of the admin response being built. Main thread, inside `admin_request`.
    pub fn admin_set_response(self, body: &[u8]) {
        // SAFETY: main thread; Envoy copies the bytes.
        unsafe { shim::admin_set_response(self.ptr(), mbuf(body)) }
    }
}

/// A main-thread bootstrap timer (one-shot; re-arm with [`BootstrapTimer::enable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootstrapTimer(pub usize);

impl BootstrapTimer {
    /// Arms the timer to fire after `delay_ms`. Main thread.
    pub fn enable(self, delay_ms: u64) {
        // SAFETY: main thread; the timer is alive until `delete`.
        unsafe { shim::timer_enable(self.0 as *mut c_void, delay_ms) }
    }
    /// Deletes the timer. Main thread; the handle must not be used afterwards.
    pub fn delete(self) {
        // SAFETY: main thread; called once.
        unsafe { shim::timer_delete(self.0 as *mut c_void) }
    }
}

// ---------------------------------------------------------------------------------------------
// Network filter (docs/envoy-abi.md#network-filter-callbacks): valid only on the connection's worker
// ---------------------------------------------------------------------------------------------

/// How to close a connection (`envoy_dynamic_module_type_network_connection_close_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseType {
    /// Write what is buffered, then close.
    FlushWrite = 0,
    /// Close at once, dropping buffered writes.
    NoFlush = 1,
}

/// A connection event reported to the `event` hook (`envoy_dynamic_module_type_network_connection_event`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// The peer closed the connection.
    RemoteClose,
    /// This side closed it (us, or Envoy, e.g. at shutdown).
    LocalClose,
    /// The connection is established.
    Connected,
    /// The connection is established with 0-RTT data.
    ConnectedZeroRtt,
}

impl ConnectionEvent {
    /// The event for Envoy's raw value; None for a value this ABI version does not define.
    pub fn from_abi(raw: abi::envoy_dynamic_module_type_network_connection_event::Type) -> Option<ConnectionEvent> {
        use abi::envoy_dynamic_module_type_network_connection_event as e;
        match raw {
            e::RemoteClose => Some(ConnectionEvent::RemoteClose),
            e::LocalClose => Some(ConnectionEvent::LocalClose),
            e::Connected => Some(ConnectionEvent::Connected),
            e::ConnectedZeroRtt => Some(ConnectionEvent::ConnectedZeroRtt),
            _ => None,
        }
    }
}

/// The result of an HTTP callout, as reported to `http_callout_done`
/// (`envoy_dynamic_module_type_http_callout_result`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CalloutResult {
    /// A response arrived (look at its `:status`).
    Success,
    /// The stream was reset: connection failure or timeout.
    Reset,
    /// The response was larger than Envoy's buffer limit.
    ExceedResponseBufferLimit,
    /// A value this ABI version does not define.
    Other(u32),
}

impl CalloutResult {
    /// The result for Envoy's raw value.
    pub fn from_abi(raw: abi::envoy_dynamic_module_type_http_callout_result::Type) -> CalloutResult {
        use abi::envoy_dynamic_module_type_http_callout_result as r;
        match raw {
            r::Success => CalloutResult::Success,
            r::Reset => CalloutResult::Reset,
            r::ExceedResponseBufferLimit => CalloutResult::ExceedResponseBufferLimit,
            other => CalloutResult::Other(other),
        }
    }
}

/// Why Envoy could not start an HTTP callout (`envoy_dynamic_module_type_http_callout_init_result`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CalloutInitError {
    /// `:method`, `:path` or `host` is missing.
    MissingRequiredHeaders,
    /// No such cluster (or called before `server_initialized`).
    ClusterNotFound,
    /// The callout id is in use.
    DuplicateCalloutId,
    /// Envoy could not create the request.
    CannotCreateRequest,
    /// A value this ABI version does not define.
    Other(u32),
}

impl CalloutInitError {
    /// The error for Envoy's raw (non-success) value.
    pub fn from_abi(raw: abi::envoy_dynamic_module_type_http_callout_init_result::Type) -> CalloutInitError {
        use abi::envoy_dynamic_module_type_http_callout_init_result as r;
        match raw {
            r::MissingRequiredHeaders => CalloutInitError::MissingRequiredHeaders,
            r::ClusterNotFound => CalloutInitError::ClusterNotFound,
            r::DuplicateCalloutId => CalloutInitError::DuplicateCalloutId,
            r::CannotCreateRequest => CalloutInitError::CannotCreateRequest,
            other => CalloutInitError::Other(other),
        }
    }
}

/// A network filter's Envoy pointer. Only valid on the worker that owns the connection, between
/// the filter's `new` and `destroy` hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetFilter(pub usize);

impl NetFilter {
    fn ptr(self) -> *mut c_void {
        self.0 as *mut c_void
    }

    /// Copies the whole read buffer into `out` (appending) and returns the number of bytes.
    pub fn read_into(self, out: &mut Vec<u8>) -> usize {
        // SAFETY: on the owning worker inside a hook; chunk pointers are valid until drained.
        unsafe {
            let n = shim::get_read_buffer_chunks_size(self.ptr());
            if n == 0 {
                return 0;
            }
            let mut chunks = vec![EMPTY_ENVOY_BUF; n];
            if !shim::get_read_buffer_chunks(self.ptr(), chunks.as_mut_ptr()) {
                return 0;
            }
            append_chunks(&chunks, out, usize::MAX)
        }
    }

    /// Removes `len` bytes from the front of the read buffer.
    pub fn drain_read(self, len: usize) {
        // SAFETY: owning worker.
        unsafe {
            shim::drain_read_buffer(self.ptr(), len);
        }
    }

    /// Writes `data` to the connection (Envoy copies it). Owning worker.
    pub fn write(self, data: &[u8], end_stream: bool) {
        // SAFETY: owning worker; Envoy copies the bytes.
        unsafe { shim::write(self.ptr(), mbuf(data), end_stream) }
    }

    /// Closes the connection with `details` as its termination details. Owning worker. May run
    /// this connection's `event` hook synchronously.
    pub fn close(self, how: CloseType, details: &str) {
        // SAFETY: owning worker.
        unsafe { shim::close_with_details(self.ptr(), how as u32, mbuf(details.as_bytes())) }
    }

    /// Makes sure reads are enabled (tcp_proxy-style filters may have disabled them, docs/envoy-abi.md#owning-a-connection).
    pub fn ensure_reading(self) {
        // SAFETY: owning worker.
        unsafe {
            if !shim::read_enabled(self.ptr()) {
                shim::read_disable(self.ptr(), false);
            }
        }
    }

    /// Envoy's connection id (unique per process).
    pub fn connection_id(self) -> u64 {
        // SAFETY: owning worker.
        unsafe { shim::get_connection_id(self.ptr()) }
    }

    /// 0-based index of the owning worker.
    pub fn worker_index(self) -> u32 {
        // SAFETY: owning worker.
        unsafe { shim::get_worker_index(self.ptr()) }
    }

    /// A descriptor of our own (a duplicate) of the connection's socket, when listener filter
    /// `reverse_tunnel_spares` noted it at accept and it still is this connection's socket
    /// (`ffi::seen_sockets`); None otherwise. Owning worker. Envoy's descriptor stays open until
    /// the connection closes; a plain close of it leaves the duplicate's connection open.
    pub fn take_socket(self) -> Option<std::net::TcpStream> {
        let local = super::seen_sockets::parse_address(&self.local_address())?;
        let peer = super::seen_sockets::parse_address(&self.remote_address())?;
        super::seen_sockets::take(local, peer)
    }

    /// The peer's `ip:port`, or "" for a non-IP peer (internal listener).
    pub fn remote_address(self) -> String {
        let mut b = EMPTY_ENVOY_BUF;
        let mut port = 0u32;
        // SAFETY: owning worker; the address bytes are copied before returning.
        unsafe {
            if shim::get_remote_address(self.ptr(), &mut b, &mut port) {
                format!("{}:{}", String::from_utf8_lossy(envoy_bytes(&b)), port)
            } else {
                String::new()
            }
        }
    }

    /// This side's `ip:port` (the listener address), or "" for a non-IP socket.
    pub fn local_address(self) -> String {
        let mut b = EMPTY_ENVOY_BUF;
        let mut port = 0u32;
        // SAFETY: owning worker; the address bytes are copied before returning.
        unsafe {
            if shim::get_local_address(self.ptr(), &mut b, &mut port) {
                format!("{}:{}", String::from_utf8_lossy(envoy_bytes(&b)), port)
            } else {
                String::new()
            }
        }
    }

    /// True if the connection runs TLS.
    pub fn is_ssl(self) -> bool {
        // SAFETY: owning worker.
        unsafe { shim::is_ssl(self.ptr()) }
    }

    /// The connection's filter state object under `key` serialized as a string (typed objects
    /// such as `envoy.network.upstream_server_name`, then plain bytes objects); None if absent.
    pub fn filter_state(self, key: &str) -> Option<Vec<u8>> {
        let mut b = EMPTY_ENVOY_BUF;
        // SAFETY: owning worker; bytes copied before returning.
        unsafe {
            if shim::get_filter_state_typed(self.ptr(), mbuf(key.as_bytes()), &mut b)
                || shim::get_filter_state_bytes(self.ptr(), mbuf(key.as_bytes()), &mut b)
            {
                Some(envoy_bytes(&b).to_vec())
            } else {
                None
            }
        }
    }

    /// Sets a string in the connection's dynamic metadata under `namespace`.
    pub fn set_metadata(self, namespace: &str, key: &str, value: &str) {
        // SAFETY: owning worker; Envoy copies the buffers.
        unsafe {
            shim::set_dynamic_metadata_string(
                self.ptr(),
                mbuf(namespace.as_bytes()),
                mbuf(key.as_bytes()),
                mbuf(value.as_bytes()),
            )
        }
    }

    /// Creates this connection's scheduler; its events run `on_network_filter_scheduled` on the
    /// owning worker. Owning worker.
    pub fn scheduler_new(self) -> NetScheduler {
        // SAFETY: owning worker.
        NetScheduler(unsafe { shim::scheduler_new(self.ptr()) } as usize)
    }
}

/// A connection's scheduler. `commit` may be called from any thread; `delete` once, on the
/// owning worker. Callers must serialize commit against delete (the relay does so under the
/// endpoint's lock, docs/envoy-abi.md#threads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetScheduler(pub usize);

impl NetScheduler {
    /// Posts `event_id` to the owning worker (runs `on_network_filter_scheduled`). Any thread.
    pub fn commit(self, event_id: u64) {
        // SAFETY: the caller guarantees the scheduler has not been deleted.
        unsafe { shim::scheduler_commit(self.0 as *mut c_void, event_id) }
    }
    /// Frees the scheduler. Owning worker, once.
    pub fn delete(self) {
        // SAFETY: called once, never committed afterwards (caller's invariant).
        unsafe { shim::scheduler_delete(self.0 as *mut c_void) }
    }
}

/// A listener filter's Envoy pointer: one accepted socket before Envoy made a connection of it.
/// Only valid on the accepting worker, inside the filter's hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerSocket(pub usize);

impl ListenerSocket {
    fn ptr(self) -> *mut c_void {
        self.0 as *mut c_void
    }

    /// Envoy's descriptor of the accepted socket (open for the length of the hook), or
    /// `NotFound` if Envoy has none. Accepting worker inside a hook.
    fn envoy_fd(self) -> std::io::Result<std::os::fd::RawFd> {
        // SAFETY: accepting worker inside a hook.
        let fd = unsafe { shim::listener_get_socket_fd(self.ptr()) };
        if fd < 0 || fd > i32::MAX as i64 {
            return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "the listener filter has no socket"));
        }
        Ok(fd as std::os::fd::RawFd)
    }

    /// A descriptor of our own for the accepted socket (`dup` of Envoy's, close-on-exec), or the
    /// error. Envoy's descriptor stays Envoy's: [`ListenerSocket::close`] closes it.
    pub fn dup_socket(self) -> std::io::Result<std::os::fd::OwnedFd> {
        let fd = self.envoy_fd()?;
        // SAFETY: Envoy keeps the descriptor open for the length of the hook; it is only
        // borrowed to duplicate it (F_DUPFD_CLOEXEC).
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        borrowed.try_clone_to_owned()
    }

    /// Notes Envoy's descriptor of the socket for [`NetFilter::take_socket`] (listener filter
    /// `reverse_tunnel_spares`); Envoy keeps the socket. Accepting worker inside a hook.
    pub fn remember(self, now_ms: u64) -> std::io::Result<()> {
        super::seen_sockets::remember(self.envoy_fd()?, now_ms)
    }

    /// Closes Envoy's descriptor of the socket (a plain `close`, so a duplicate keeps the
    /// connection open) with `details` as termination details; Envoy makes no connection of it.
    pub fn close(self, details: &str) {
        // SAFETY: accepting worker inside a hook; Envoy copies the details.
        unsafe { shim::listener_close_socket(self.ptr(), mbuf(details.as_bytes())) }
    }

    /// 0-based index of the accepting worker.
    pub fn worker_index(self) -> u32 {
        // SAFETY: accepting worker inside a hook.
        unsafe { shim::listener_get_worker_index(self.ptr()) }
    }
}

// ---------------------------------------------------------------------------------------------
// The raw callbacks, or no-op shims in unit tests.
// ---------------------------------------------------------------------------------------------

#[cfg(not(test))]
mod shim {
    pub use envoy_abi::{
        envoy_dynamic_module_callback_bootstrap_extension_admin_set_response as admin_set_response,
        envoy_dynamic_module_callback_bootstrap_extension_config_decrement_gauge as decrement_gauge,
        envoy_dynamic_module_callback_bootstrap_extension_config_define_counter as define_counter,
        envoy_dynamic_module_callback_bootstrap_extension_config_define_gauge as define_gauge,
        envoy_dynamic_module_callback_bootstrap_extension_config_define_histogram as define_histogram,
        envoy_dynamic_module_callback_bootstrap_extension_config_increment_counter as increment_counter,
        envoy_dynamic_module_callback_bootstrap_extension_config_increment_gauge as increment_gauge,
        envoy_dynamic_module_callback_bootstrap_extension_config_record_histogram_value as record_histogram,
        envoy_dynamic_module_callback_bootstrap_extension_config_set_gauge as set_gauge,
        envoy_dynamic_module_callback_bootstrap_extension_config_signal_init_complete as signal_init_complete,
        envoy_dynamic_module_callback_bootstrap_extension_http_callout as http_callout,
        envoy_dynamic_module_callback_bootstrap_extension_register_admin_handler as register_admin_handler,
        envoy_dynamic_module_callback_bootstrap_extension_timer_delete as timer_delete,
        envoy_dynamic_module_callback_bootstrap_extension_timer_enable as timer_enable,
        envoy_dynamic_module_callback_bootstrap_extension_timer_new as timer_new,
        envoy_dynamic_module_callback_get_concurrency as get_concurrency,
        envoy_dynamic_module_callback_get_runtime_bool as get_runtime_bool,
        envoy_dynamic_module_callback_get_runtime_int as get_runtime_int,
        envoy_dynamic_module_callback_log_enabled as log_enabled,
        envoy_dynamic_module_callback_log_v2 as log_v2,
        envoy_dynamic_module_callback_network_filter_close_with_details as close_with_details,
        envoy_dynamic_module_callback_network_filter_drain_read_buffer as drain_read_buffer,
        envoy_dynamic_module_callback_network_filter_get_connection_id as get_connection_id,
        envoy_dynamic_module_callback_network_filter_get_read_buffer_chunks as get_read_buffer_chunks,
        envoy_dynamic_module_callback_network_filter_get_read_buffer_chunks_size as get_read_buffer_chunks_size,
        envoy_dynamic_module_callback_network_filter_get_local_address as get_local_address,
        envoy_dynamic_module_callback_network_filter_get_remote_address as get_remote_address,
        envoy_dynamic_module_callback_network_filter_get_worker_index as get_worker_index,
        envoy_dynamic_module_callback_network_filter_is_ssl as is_ssl,
        envoy_dynamic_module_callback_network_filter_read_disable as read_disable,
        envoy_dynamic_module_callback_network_filter_read_enabled as read_enabled,
        envoy_dynamic_module_callback_network_filter_scheduler_commit as scheduler_commit,
        envoy_dynamic_module_callback_network_filter_scheduler_delete as scheduler_delete,
        envoy_dynamic_module_callback_network_filter_scheduler_new as scheduler_new,
        envoy_dynamic_module_callback_network_filter_write as write,
        envoy_dynamic_module_callback_network_get_filter_state_bytes as get_filter_state_bytes,
        envoy_dynamic_module_callback_network_get_filter_state_typed as get_filter_state_typed,
        envoy_dynamic_module_callback_network_set_dynamic_metadata_string as set_dynamic_metadata_string,
        envoy_dynamic_module_callback_listener_filter_get_socket_fd as listener_get_socket_fd,
        envoy_dynamic_module_callback_listener_filter_close_socket as listener_close_socket,
        envoy_dynamic_module_callback_listener_filter_get_worker_index as listener_get_worker_index,
    };
}

/// Unit tests run without Envoy: the same names as no-op functions with the same signatures.
#[cfg(test)]
#[allow(clippy::missing_safety_doc, unused_variables)]
mod shim {
    use envoy_abi::{envoy_dynamic_module_type_envoy_buffer as EB, envoy_dynamic_module_type_module_buffer as MB};
    use std::os::raw::c_void;
    pub unsafe fn log_enabled(_: u32) -> bool { false }
    pub unsafe fn log_v2(_: u32, _: MB, _: MB, _: u32) {}
    pub unsafe fn get_concurrency() -> u32 { 1 }
    pub unsafe fn get_runtime_bool(_: MB, d: bool) -> bool { d }
    pub unsafe fn get_runtime_int(_: MB, d: u64) -> u64 { d }
    pub unsafe fn define_counter(_: *mut c_void, _: MB, _: *mut MB, _: usize, id: *mut usize) -> u32 { unsafe { *id = 1 }; 0 }
    pub unsafe fn define_gauge(_: *mut c_void, _: MB, _: *mut MB, _: usize, id: *mut usize) -> u32 { unsafe { *id = 1 }; 0 }
    pub unsafe fn define_histogram(_: *mut c_void, _: MB, _: *mut MB, _: usize, id: *mut usize) -> u32 { unsafe { *id = 1 }; 0 }
    pub unsafe fn increment_counter(_: *mut c_void, _: usize, _: *mut MB, _: usize, _: u64) -> u32 { 0 }
    pub unsafe fn set_gauge(_: *mut c_void, _: usize, _: *mut MB, _: usize, _: u64) -> u32 { 0 }
    pub unsafe fn increment_gauge(_: *mut c_void, _: usize, _: *mut MB, _: usize, _: u64) -> u32 { 0 }
    pub unsafe fn decrement_gauge(_: *mut c_void, _: usize, _: *mut MB, _: usize, _: u64) -> u32 { 0 }
    pub unsafe fn record_histogram(_: *mut c_void, _: usize, _: *mut MB, _: usize, _: u64) -> u32 { 0 }
    pub unsafe fn signal_init_complete(_: *mut c_void) {}
    pub unsafe fn timer_new(_: *mut c_void) -> *mut c_void { std::ptr::null_mut() }
    pub unsafe fn timer_enable(_: *mut c_void, _: u64) {}
    pub unsafe fn timer_delete(_: *mut c_void) {}
    pub unsafe fn register_admin_handler(_: *mut c_void, _: MB, _: MB, _: bool, _: bool) -> bool { false }
    pub unsafe fn admin_set_response(_: *mut c_void, _: MB) {}
    pub unsafe fn http_callout(_: *mut c_void, _: *mut u64, _: MB, _: *mut envoy_abi::envoy_dynamic_module_type_module_http_header, _: usize, _: MB, _: u64) -> u32 { 2 }
    pub unsafe fn get_read_buffer_chunks_size(_: *mut c_void) -> usize { 0 }
    pub unsafe fn get_read_buffer_chunks(_: *mut c_void, _: *mut EB) -> bool { false }
    pub unsafe fn drain_read_buffer(_: *mut c_void, _: usize) -> bool { true }
    pub unsafe fn write(_: *mut c_void, _: MB, _: bool) {}
    pub unsafe fn close_with_details(_: *mut c_void, _: u32, _: MB) {}
    pub unsafe fn read_enabled(_: *mut c_void) -> bool { true }
    pub unsafe fn read_disable(_: *mut c_void, _: bool) -> u32 { 0 }
    pub unsafe fn get_connection_id(_: *mut c_void) -> u64 { 0 }
    pub unsafe fn get_worker_index(_: *mut c_void) -> u32 { 0 }
    pub unsafe fn get_remote_address(_: *mut c_void, _: *mut EB, _: *mut u32) -> bool { false }
    pub unsafe fn get_local_address(_: *mut c_void, _: *mut EB, _: *mut u32) -> bool { false }
    pub unsafe fn is_ssl(_: *mut c_void) -> bool { false }
    pub unsafe fn get_filter_state_typed(_: *mut c_void, _: MB, _: *mut EB) -> bool { false }
    pub unsafe fn get_filter_state_bytes(_: *mut c_void, _: MB, _: *mut EB) -> bool { false }
    pub unsafe fn set_dynamic_metadata_string(_: *mut c_void, _: MB, _: MB, _: MB) {}
    pub unsafe fn scheduler_new(_: *mut c_void) -> *mut c_void { std::ptr::null_mut() }
    pub unsafe fn scheduler_commit(_: *mut c_void, _: u64) {}
    pub unsafe fn scheduler_delete(_: *mut c_void) {}
    pub unsafe fn listener_get_socket_fd(_: *mut c_void) -> i64 { -1 }
    pub unsafe fn listener_close_socket(_: *mut c_void, _: MB) {}
    pub unsafe fn listener_get_worker_index(_: *mut c_void) -> u32 { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_values_map_to_their_names() {
        assert_eq!(ConnectionEvent::from_abi(0), Some(ConnectionEvent::RemoteClose));
        assert_eq!(ConnectionEvent::from_abi(1), Some(ConnectionEvent::LocalClose));
        assert_eq!(ConnectionEvent::from_abi(2), Some(ConnectionEvent::Connected));
        assert_eq!(ConnectionEvent::from_abi(9), None);
        assert_eq!(CalloutResult::from_abi(0), CalloutResult::Success);
        assert_eq!(CalloutResult::from_abi(1), CalloutResult::Reset);
        assert_eq!(CalloutResult::from_abi(7), CalloutResult::Other(7));
        assert_eq!(CalloutInitError::from_abi(2), CalloutInitError::ClusterNotFound);
        assert_eq!(CalloutInitError::from_abi(4), CalloutInitError::CannotCreateRequest);
    }
}
