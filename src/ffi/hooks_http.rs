//! `extern "C"` hooks of the HTTP filter `reverse_tunnel_route` (docs/envoy-abi.md, "HTTP
//! filter"). `config_new`/`config_destroy` run on the main thread; every per-stream hook on the
//! stream's worker. Each converts its arguments and calls [`crate::adapters::http_filter`] inside
//! [`guard`]; a panic answers or resets that stream only.
//!
//! Hooks Envoy looks up but this filter does not use (response-side hooks: the filter is terminal
//! and produces the response itself; callouts; per-route config) return their neutral value.

use super::envoy_http::HttpFilter;
use super::guard;
use crate::adapters::http_filter::{self as adapter, HttpStream, RouteFilterConfig};
use envoy_abi as abi;
use std::rc::Rc;

type ConfigEnvoy = abi::envoy_dynamic_module_type_http_filter_config_envoy_ptr;
type ConfigModule = abi::envoy_dynamic_module_type_http_filter_config_module_ptr;
type FilterEnvoy = abi::envoy_dynamic_module_type_http_filter_envoy_ptr;
type FilterModule = abi::envoy_dynamic_module_type_http_filter_module_ptr;
type EnvoyBuf = abi::envoy_dynamic_module_type_envoy_buffer;
type HeadersStatus = abi::envoy_dynamic_module_type_on_http_filter_request_headers_status::Type;
type BodyStatus = abi::envoy_dynamic_module_type_on_http_filter_request_body_status::Type;
type TrailersStatus = abi::envoy_dynamic_module_type_on_http_filter_request_trailers_status::Type;
type RespHeadersStatus = abi::envoy_dynamic_module_type_on_http_filter_response_headers_status::Type;
type RespBodyStatus = abi::envoy_dynamic_module_type_on_http_filter_response_body_status::Type;
type RespTrailersStatus = abi::envoy_dynamic_module_type_on_http_filter_response_trailers_status::Type;

/// The per-stream object handed to Envoy: the stream and its config.
struct Stream {
    cfg: *const RouteFilterConfig,
    s: Rc<HttpStream>,
}

/// # Safety
/// `m` must be a pointer returned by our `new` hook and not yet destroyed.
unsafe fn stream<'a>(m: FilterModule) -> Option<&'a Stream> {
    // SAFETY: per the contract above.
    unsafe { (m as *const Stream).as_ref() }
}

/// A panic in a stream's hook resets that stream.
fn reset_after_panic(f: FilterEnvoy) {
    HttpFilter(f as usize).reset("reverse_tunnel_internal_error");
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    _cfg: ConfigEnvoy,
    name: EnvoyBuf,
    config: EnvoyBuf,
) -> ConfigModule {
    // SAFETY: Envoy's buffers are valid during the hook.
    unsafe { super::config_new("http config_new", &name, &config, RouteFilterConfig::new) }
}
const _: abi::envoy_dynamic_module_on_http_filter_config_new_fn = Some(envoy_dynamic_module_on_http_filter_config_new);

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(cfg: ConfigModule) {
    // SAFETY: Envoy passes the pointer our config_new returned, once, after its streams.
    unsafe { super::config_drop::<RouteFilterConfig>(cfg) }
}
const _: abi::envoy_dynamic_module_on_http_filter_config_destroy_fn = Some(envoy_dynamic_module_on_http_filter_config_destroy);

/// Creates the stream object; NULL fails the stream.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(cfg: ConfigModule, f: FilterEnvoy) -> FilterModule {
    let cfg_ptr = cfg as *const RouteFilterConfig;
    // SAFETY: our config pointer, alive while its streams exist.
    let Some(c) = (unsafe { cfg_ptr.as_ref() }) else { return std::ptr::null() };
    guard("http new", std::ptr::null(), || {
        let s = adapter::on_new(c, HttpFilter(f as usize), c.runtime.clone());
        Box::into_raw(Box::new(Stream { cfg: cfg_ptr, s })) as FilterModule
    })
}
const _: abi::envoy_dynamic_module_on_http_filter_new_fn = Some(envoy_dynamic_module_on_http_filter_new);

/// Always stops: the filter answers the request itself.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    f: FilterEnvoy,
    m: FilterModule,
    end_of_stream: bool,
) -> HeadersStatus {
    const STOP: HeadersStatus = abi::envoy_dynamic_module_type_on_http_filter_request_headers_status::StopIteration;
    // SAFETY: m is our stream pointer; its config outlives it.
    if let Some(st) = unsafe { stream(m) } {
        let cfg = unsafe { &*st.cfg };
        if !guard("http request_headers", false, || {
            adapter::on_request_headers(cfg, &st.s, end_of_stream);
            true
        }) {
            reset_after_panic(f);
        }
    }
    STOP
}
const _: abi::envoy_dynamic_module_on_http_filter_request_headers_fn = Some(envoy_dynamic_module_on_http_filter_request_headers);

/// Takes each chunk out of Envoy's buffer (nothing is buffered there).
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    f: FilterEnvoy,
    m: FilterModule,
    end_of_stream: bool,
) -> BodyStatus {
    use abi::envoy_dynamic_module_type_on_http_filter_request_body_status as S;
    // SAFETY: m is our stream pointer.
    let Some(st) = (unsafe { stream(m) }) else { return S::StopIterationNoBuffer };
    match guard("http request_body", None, || Some(adapter::on_request_body(&st.s, end_of_stream))) {
        Some(adapter::BodyTaken::Taken) => S::StopIterationNoBuffer,
        Some(adapter::BodyTaken::LeftInEnvoy) => S::StopIterationAndWatermark,
        None => {
            reset_after_panic(f);
            S::StopIterationNoBuffer
        }
    }
}
const _: abi::envoy_dynamic_module_on_http_filter_request_body_fn = Some(envoy_dynamic_module_on_http_filter_request_body);

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(f: FilterEnvoy, m: FilterModule) -> TrailersStatus {
    const STOP: TrailersStatus = abi::envoy_dynamic_module_type_on_http_filter_request_trailers_status::StopIteration;
    // SAFETY: m is our stream pointer.
    if let Some(st) = unsafe { stream(m) } {
        if !guard("http request_trailers", false, || {
            adapter::on_request_trailers(&st.s);
            true
        }) {
            reset_after_panic(f);
        }
    }
    STOP
}
const _: abi::envoy_dynamic_module_on_http_filter_request_trailers_fn = Some(envoy_dynamic_module_on_http_filter_request_trailers);

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(_f: FilterEnvoy, _m: FilterModule, _end: bool) -> RespHeadersStatus {
    abi::envoy_dynamic_module_type_on_http_filter_response_headers_status::Continue
}
const _: abi::envoy_dynamic_module_on_http_filter_response_headers_fn = Some(envoy_dynamic_module_on_http_filter_response_headers);

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_body(_f: FilterEnvoy, _m: FilterModule, _end: bool) -> RespBodyStatus {
    abi::envoy_dynamic_module_type_on_http_filter_response_body_status::Continue
}
const _: abi::envoy_dynamic_module_on_http_filter_response_body_fn = Some(envoy_dynamic_module_on_http_filter_response_body);

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(_f: FilterEnvoy, _m: FilterModule) -> RespTrailersStatus {
    abi::envoy_dynamic_module_type_on_http_filter_response_trailers_status::Continue
}
const _: abi::envoy_dynamic_module_on_http_filter_response_trailers_fn = Some(envoy_dynamic_module_on_http_filter_response_trailers);

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(_f: FilterEnvoy, m: FilterModule) {
    // SAFETY: m is our stream pointer.
    if let Some(st) = unsafe { stream(m) } {
        guard("http stream_complete", (), || adapter::on_complete(&st.s));
    }
}
const _: abi::envoy_dynamic_module_on_http_filter_stream_complete_fn = Some(envoy_dynamic_module_on_http_filter_stream_complete);

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(m: FilterModule) {
    if m.is_null() {
        return;
    }
    // SAFETY: created by Box::into_raw in `new`; Envoy destroys it once.
    let st = unsafe { Box::from_raw(m as *mut Stream) };
    guard("http destroy", (), move || adapter::on_destroy(st.s));
}
const _: abi::envoy_dynamic_module_on_http_filter_destroy_fn = Some(envoy_dynamic_module_on_http_filter_destroy);

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(f: FilterEnvoy, m: FilterModule, _event: u64) {
    // SAFETY: m is our stream pointer.
    if let Some(st) = unsafe { stream(m) } {
        if !guard("http scheduled", false, || {
            adapter::on_scheduled(&st.s);
            true
        }) {
            reset_after_panic(f);
        }
    }
}
const _: abi::envoy_dynamic_module_on_http_filter_scheduled_fn = Some(envoy_dynamic_module_on_http_filter_scheduled);

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(_f: FilterEnvoy, m: FilterModule) {
    // SAFETY: m is our stream pointer.
    if let Some(st) = unsafe { stream(m) } {
        guard("http above_watermark", (), || adapter::on_above_watermark(&st.s));
    }
}
const _: abi::envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark_fn =
    Some(envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark);

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(_f: FilterEnvoy, m: FilterModule) {
    // SAFETY: m is our stream pointer.
    if let Some(st) = unsafe { stream(m) } {
        guard("http below_watermark", (), || adapter::on_below_watermark(&st.s));
    }
}
const _: abi::envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark_fn =
    Some(envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark);

// ---- hooks Envoy 1.40.0 resolves for every HTTP dynamic-module filter, unused by this filter ----
// (it starts no callouts and has no per-route config; Envoy never calls these for it). Pointer
// arguments are taken as opaque addresses: none is dereferenced.

type Opaque = *const std::os::raw::c_void;

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _f: FilterEnvoy,
    _m: FilterModule,
    _id: u64,
    _result: u32,
    _headers: Opaque,
    _headers_size: usize,
    _body: Opaque,
    _body_size: usize,
) {
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _f: FilterEnvoy,
    _m: FilterModule,
    _id: u64,
    _headers: Opaque,
    _size: usize,
    _end: bool,
) {
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _f: FilterEnvoy,
    _m: FilterModule,
    _id: u64,
    _data: Opaque,
    _count: usize,
    _end: bool,
) {
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _f: FilterEnvoy,
    _m: FilterModule,
    _id: u64,
    _trailers: Opaque,
    _size: usize,
) {
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(_f: FilterEnvoy, _m: FilterModule, _id: u64) {}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(_f: FilterEnvoy, _m: FilterModule, _id: u64, _reason: u32) {}

/// Envoy is about to send a local reply (e.g. a stream error): let it (status Continue = 0).
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_local_reply(
    _f: FilterEnvoy,
    _m: FilterModule,
    _code: u32,
    _details: EnvoyBuf,
    _reset_imminent: bool,
) -> u32 {
    0
}

/// No per-route config: NULL rejects one (the filter has none).
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(_name: EnvoyBuf, _config: EnvoyBuf) -> Opaque {
    std::ptr::null()
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(_c: Opaque) {}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(_c: ConfigEnvoy, _m: ConfigModule, _event: u64) {}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _c: ConfigEnvoy,
    _m: ConfigModule,
    _id: u64,
    _result: u32,
    _headers: Opaque,
    _headers_size: usize,
    _body: Opaque,
    _body_size: usize,
) {
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_headers(
    _c: ConfigEnvoy,
    _m: ConfigModule,
    _id: u64,
    _headers: Opaque,
    _size: usize,
    _end: bool,
) {
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_data(
    _c: ConfigEnvoy,
    _m: ConfigModule,
    _id: u64,
    _data: Opaque,
    _count: usize,
    _end: bool,
) {
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_trailers(
    _c: ConfigEnvoy,
    _m: ConfigModule,
    _id: u64,
    _trailers: Opaque,
    _size: usize,
) {
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_complete(_c: ConfigEnvoy, _m: ConfigModule, _id: u64) {}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_reset(
    _c: ConfigEnvoy,
    _m: ConfigModule,
    _id: u64,
    _reason: u32,
) {
}
