//! `extern "C"` hooks of the bootstrap extension (docs/envoy-abi.md#bootstrap-hooks: all 17 are required by 1.40.0).
//! Every hook runs on the main thread; each converts its arguments and calls
//! [`crate::adapters::bootstrap`] inside [`guard`].

use super::envoy::{envoy_bytes, BootstrapConfigHandle, CalloutResult};
use super::guard;
use crate::adapters::bootstrap::{self, BootstrapExtension};
use envoy_abi as abi;
use std::os::raw::c_void;

type ConfigEnvoy = abi::envoy_dynamic_module_type_bootstrap_extension_config_envoy_ptr;
type ConfigModule = abi::envoy_dynamic_module_type_bootstrap_extension_config_module_ptr;
type ExtEnvoy = abi::envoy_dynamic_module_type_bootstrap_extension_envoy_ptr;
type ExtModule = abi::envoy_dynamic_module_type_bootstrap_extension_module_ptr;
type EnvoyBuf = abi::envoy_dynamic_module_type_envoy_buffer;

/// # Safety
/// `p` must be a pointer returned by our `config_new` and not yet destroyed.
unsafe fn ext<'a>(p: *const c_void) -> Option<&'a BootstrapExtension> {
    // SAFETY: per the contract above.
    unsafe { (p as *const BootstrapExtension).as_ref() }
}

/// Decodes the config; NULL (Envoy refuses to start) with an error log naming the field.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_bootstrap_extension_config_new(
    config_envoy: ConfigEnvoy,
    name: EnvoyBuf,
    config: EnvoyBuf,
) -> ConfigModule {
    let handle = BootstrapConfigHandle(config_envoy as usize);
    // SAFETY: Envoy's buffers are valid during the hook.
    unsafe { super::config_new("bootstrap config_new", &name, &config, |name, config| bootstrap::config_new(handle, name, config)) }
}
const _: abi::envoy_dynamic_module_on_bootstrap_extension_config_new_fn =
    Some(envoy_dynamic_module_on_bootstrap_extension_config_new);

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_bootstrap_extension_config_destroy(cfg: ConfigModule) {
    if cfg.is_null() {
        return;
    }
    // SAFETY: created by Box::into_raw in config_new; Envoy destroys it once.
    let b = unsafe { Box::from_raw(cfg as *mut BootstrapExtension) };
    guard("bootstrap config_destroy", (), || b.destroy());
}
const _: abi::envoy_dynamic_module_on_bootstrap_extension_config_destroy_fn =
    Some(envoy_dynamic_module_on_bootstrap_extension_config_destroy);

/// The extension object is the config object itself (one per process).
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_bootstrap_extension_new(cfg: ConfigModule, _ext: ExtEnvoy) -> ExtModule {
    cfg
}
const _: abi::envoy_dynamic_module_on_bootstrap_extension_new_fn = Some(envoy_dynamic_module_on_bootstrap_extension_new);

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_bootstrap_extension_worker_thread_initialized(_e: ExtEnvoy, _m: ExtModule) {}
const _: abi::envoy_dynamic_module_on_bootstrap_extension_lifecycle_fn =
    Some(envoy_dynamic_module_on_bootstrap_extension_worker_thread_initialized);

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_bootstrap_extension_server_initialized(_e: ExtEnvoy, m: ExtModule) {
    // SAFETY: m is our config pointer.
    if let Some(x) = unsafe { ext(m) } {
        guard("bootstrap server_initialized", (), || x.server_initialized());
    }
}
const _: abi::envoy_dynamic_module_on_bootstrap_extension_lifecycle_fn =
    Some(envoy_dynamic_module_on_bootstrap_extension_server_initialized);

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_bootstrap_extension_drain_started(_e: ExtEnvoy, m: ExtModule) {
    // SAFETY: m is our config pointer.
    if let Some(x) = unsafe { ext(m) } {
        guard("bootstrap drain_started", (), || x.drain_started());
    }
}
const _: abi::envoy_dynamic_module_on_bootstrap_extension_lifecycle_fn =
    Some(envoy_dynamic_module_on_bootstrap_extension_drain_started);

/// Always calls the completion callback exactly once, even if our cleanup panics.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_bootstrap_extension_shutdown(
    _e: ExtEnvoy,
    m: ExtModule,
    completion: abi::envoy_dynamic_module_type_event_cb,
    context: *mut c_void,
) {
    // SAFETY: m is our config pointer.
    if let Some(x) = unsafe { ext(m) } {
        guard("bootstrap shutdown", (), || x.shutdown());
    }
    if let Some(cb) = completion {
        // SAFETY: Envoy's completion callback with its own context, called once.
        unsafe { cb(context) };
    }
}
const _: abi::envoy_dynamic_module_on_bootstrap_extension_shutdown_fn =
    Some(envoy_dynamic_module_on_bootstrap_extension_shutdown);

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_bootstrap_extension_destroy(_m: ExtModule) {}
const _: abi::envoy_dynamic_module_on_bootstrap_extension_destroy_fn = Some(envoy_dynamic_module_on_bootstrap_extension_destroy);

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_bootstrap_extension_config_scheduled(_c: ConfigEnvoy, _m: ConfigModule, _event: u64) {}
const _: abi::envoy_dynamic_module_on_bootstrap_extension_config_scheduled_fn =
    Some(envoy_dynamic_module_on_bootstrap_extension_config_scheduled);

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_bootstrap_extension_timer_fired(
    _c: ConfigEnvoy,
    m: ConfigModule,
    _timer: abi::envoy_dynamic_module_type_bootstrap_extension_timer_module_ptr,
) {
    // SAFETY: m is our config pointer.
    if let Some(x) = unsafe { ext(m) } {
        guard("bootstrap timer_fired", (), || x.timer_fired());
    }
}
const _: abi::envoy_dynamic_module_on_bootstrap_extension_timer_fired_fn =
    Some(envoy_dynamic_module_on_bootstrap_extension_timer_fired);

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_bootstrap_extension_file_changed(_c: ConfigEnvoy, _m: ConfigModule, _p: EnvoyBuf, _ev: u32) {}
const _: abi::envoy_dynamic_module_on_bootstrap_extension_file_changed_fn =
    Some(envoy_dynamic_module_on_bootstrap_extension_file_changed);

/// An HTTP callout (the reporter's or a remote JWKS fetch) finished: passes the result, `:status`
/// and the body (copied, at most `MAX_JWKS_BYTES` + 1 bytes) on. Header and body pointers are
/// valid only during the hook, NULL on failure (docs/envoy-abi.md#bootstrap-hooks).
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_bootstrap_extension_http_callout_done(
    _c: ConfigEnvoy,
    m: ConfigModule,
    id: u64,
    result: abi::envoy_dynamic_module_type_http_callout_result::Type,
    headers: *mut abi::envoy_dynamic_module_type_envoy_http_header,
    headers_size: usize,
    body: *mut EnvoyBuf,
    body_size: usize,
) {
    // SAFETY: m is our config pointer; headers (if not NULL) hold headers_size entries and body
    // (if not NULL) body_size chunks, whose buffers live during the hook.
    let (x, status, body) = unsafe { (ext(m), response_status(headers, headers_size), response_body(body, body_size)) };
    if let Some(x) = x {
        guard("bootstrap http_callout_done", (), || {
            x.http_callout_done(id, CalloutResult::from_abi(result), status.as_deref(), &body)
        });
    }
}

/// The response body chunks, concatenated; copying stops past `MAX_JWKS_BYTES` (the caller
/// refuses a body that long).
///
/// # Safety
/// `chunks` must be NULL or point to `n` valid buffers whose bytes are alive.
unsafe fn response_body(chunks: *const EnvoyBuf, n: usize) -> Vec<u8> {
    let limit = crate::config::jwt::MAX_JWKS_BYTES + 1;
    if chunks.is_null() {
        return Vec::new();
    }
    // SAFETY: per the contract above.
    let cs = unsafe { std::slice::from_raw_parts(chunks, n) };
    let mut out = Vec::new();
    for c in cs {
        // SAFETY: Envoy's body buffers are valid during the hook.
        let bytes = unsafe { envoy_bytes(c) };
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    out
}

/// The `:status` header among Envoy's response headers, copied.
///
/// # Safety
/// `headers` must be NULL or point to `n` valid headers whose buffers are alive.
unsafe fn response_status(headers: *const abi::envoy_dynamic_module_type_envoy_http_header, n: usize) -> Option<String> {
    if headers.is_null() {
        return None;
    }
    // SAFETY: per the contract above.
    let hs = unsafe { std::slice::from_raw_parts(headers, n) };
    hs.iter().find_map(|h| {
        let key = abi::envoy_dynamic_module_type_envoy_buffer { ptr: h.key_ptr, length: h.key_length };
        let value = abi::envoy_dynamic_module_type_envoy_buffer { ptr: h.value_ptr, length: h.value_length };
        // SAFETY: Envoy's header buffers are valid during the hook.
        let (k, v) = unsafe { (envoy_bytes(&key), envoy_bytes(&value)) };
        (k == b":status").then(|| String::from_utf8_lossy(v).into_owned())
    })
}
const _: abi::envoy_dynamic_module_on_bootstrap_extension_http_callout_done_fn =
    Some(envoy_dynamic_module_on_bootstrap_extension_http_callout_done);

/// Serves `/reverse_tunnels`; 500 on failure.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_bootstrap_extension_admin_request(
    c: ConfigEnvoy,
    m: ConfigModule,
    method: EnvoyBuf,
    path: EnvoyBuf,
    _body: EnvoyBuf,
) -> u32 {
    // SAFETY: m is our config pointer; buffers valid during the hook.
    let (x, method, path) = unsafe { (ext(m), envoy_bytes(&method), envoy_bytes(&path)) };
    let Some(x) = x else { return 500 };
    let (method, path) = (String::from_utf8_lossy(method), String::from_utf8_lossy(path));
    guard("bootstrap admin_request", 500, || {
        let (status, body) = x.admin_request(&method, &path);
        BootstrapConfigHandle(c as usize).admin_set_response(&body);
        status
    })
}
const _: abi::envoy_dynamic_module_on_bootstrap_extension_admin_request_fn =
    Some(envoy_dynamic_module_on_bootstrap_extension_admin_request);

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_bootstrap_extension_cluster_add_or_update(_c: ConfigEnvoy, _m: ConfigModule, _n: EnvoyBuf) {}
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_bootstrap_extension_cluster_removal(_c: ConfigEnvoy, _m: ConfigModule, _n: EnvoyBuf) {}
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_bootstrap_extension_listener_add_or_update(_c: ConfigEnvoy, _m: ConfigModule, _n: EnvoyBuf) {}
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_bootstrap_extension_listener_removal(_c: ConfigEnvoy, _m: ConfigModule, _n: EnvoyBuf) {}
const _: [abi::envoy_dynamic_module_on_bootstrap_extension_resource_fn; 4] = [
    Some(envoy_dynamic_module_on_bootstrap_extension_cluster_add_or_update),
    Some(envoy_dynamic_module_on_bootstrap_extension_cluster_removal),
    Some(envoy_dynamic_module_on_bootstrap_extension_listener_add_or_update),
    Some(envoy_dynamic_module_on_bootstrap_extension_listener_removal),
];
