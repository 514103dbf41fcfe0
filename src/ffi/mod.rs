//! The FFI layer: the only code with `unsafe` and `extern "C"`.
//!
//! - [`envoy`]: safe wrappers over the Envoy callbacks we call (declared in `abi/abi.h`). Each
//!   wrapper says which thread it may run on (docs/envoy-abi.md#threads).
//! - `hooks_bootstrap`, `hooks_network`, `hooks_http`, `hooks_listener`: the `extern "C"` hooks
//!   Envoy calls. Each hook is a few lines: convert pointers and buffers, run the adapter inside
//!   [`guard`], return. The `config_new` hooks share [`config_new`], the filters' `config_destroy`
//!   hooks `config_drop`.
//! - [`seen_sockets`]: descriptors the listener filter saw accepted, for the handshake filter
//!   to move a spare tunnel's socket to a socket loop.
//! - [`log`](crate::rt_log): logging through Envoy's `dynamic_modules` logger.
//!
//! No panic crosses into Envoy: every hook runs inside [`guard`], which catches unwinding and
//! returns the hook's defined failure value (the release profile uses `panic = "unwind"`).

pub mod envoy;
pub mod envoy_http;
pub mod envoy_mode;
pub mod seen_sockets;
mod hooks_bootstrap;
mod hooks_http;
mod hooks_listener;
mod hooks_network;

use std::os::raw::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};

/// Number of panics caught at the FFI boundary since the module was loaded.
pub static PANICS_CAUGHT: AtomicU64 = AtomicU64::new(0);

/// `envoy_dynamic_module_on_program_init`: called once on the main thread right after `dlopen`;
/// returns the ABI version string Envoy 1.40.0 expects, `v0.2.0` (docs/envoy-abi.md#loading-and-version).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    envoy_abi::ABI_VERSION.as_ptr() as *const c_char
}
const _: envoy_abi::envoy_dynamic_module_on_program_init_fn = Some(envoy_dynamic_module_on_program_init);

/// Runs `f`, turning a panic into `on_panic` (logged and counted) so it never unwinds into Envoy.
/// `what` names the hook for the log line.
pub fn guard<T>(what: &str, on_panic: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => {
            PANICS_CAUGHT.fetch_add(1, Ordering::Relaxed);
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".to_string());
            envoy::log(envoy::LogLevel::Error, &format!("reverse_tunnel: panic in {what}: {msg}"), file!(), line!());
            on_panic
        }
    }
}

/// The body of every `config_new` hook (bootstrap extension, network, HTTP and listener filter), main
/// thread: `make` decodes the config named `name` inside [`guard`]; a config is boxed and its
/// pointer handed to Envoy (the matching `config_destroy` frees it); an error is logged (it names
/// the field) and answers NULL, which makes Envoy refuse the config.
///
/// # Safety
/// `name` and `config` must be Envoy buffers valid for the call (they are during the hook).
unsafe fn config_new<C, E: std::fmt::Display>(
    what: &str,
    name: &envoy_abi::envoy_dynamic_module_type_envoy_buffer,
    config: &envoy_abi::envoy_dynamic_module_type_envoy_buffer,
    make: impl FnOnce(&str, &[u8]) -> Result<C, E>,
) -> *const std::os::raw::c_void {
    // SAFETY: per the contract above.
    let (name, config) = unsafe { (envoy::envoy_bytes(name), envoy::envoy_bytes(config)) };
    let name = String::from_utf8_lossy(name).into_owned();
    guard(what, std::ptr::null(), || match make(&name, config) {
        Ok(c) => Box::into_raw(Box::new(c)) as *const std::os::raw::c_void,
        Err(msg) => {
            envoy::log(envoy::LogLevel::Error, &format!("reverse_tunnel: invalid config: {msg}"), file!(), line!());
            std::ptr::null()
        }
    })
}

/// The body of the filter `config_destroy` hooks (network, HTTP, listener), main thread: frees a
/// config that [`config_new`] boxed as a `C`; NULL (a config that was refused) frees nothing.
///
/// # Safety
/// `cfg` must be NULL or a pointer [`config_new`] returned for a `C`, not freed yet, and no filter
/// of that config may still use it (Envoy destroys a config after its filters).
unsafe fn config_drop<C>(cfg: *const std::os::raw::c_void) {
    if !cfg.is_null() {
        // SAFETY: per the contract above.
        drop(unsafe { Box::from_raw(cfg as *mut C) });
    }
}

/// Logs through Envoy's `dynamic_modules` logger from any thread, formatting only when the
/// level is enabled: `rt_log!(Info, "tunnel {} admitted", id)`.
#[macro_export]
macro_rules! rt_log {
    ($lvl:ident, $($arg:tt)*) => {{
        if $crate::ffi::envoy::log_enabled($crate::ffi::envoy::LogLevel::$lvl) {
            $crate::ffi::envoy::log($crate::ffi::envoy::LogLevel::$lvl, &format!($($arg)*), file!(), line!());
        }
    }};
}
