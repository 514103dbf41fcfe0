//! `extern "C"` hooks of the network filters `reverse_tunnel` and `reverse_tunnel_egress`
//! (docs/envoy-abi.md#network-filter-hooks). `config_new`/`config_destroy` run on the main thread; every other hook on the
//! worker that owns the connection. Each converts its arguments and calls
//! [`crate::adapters::network`] inside [`guard`]; a panic closes only that connection.

use super::envoy::{CloseType, ConnectionEvent, NetFilter};
use super::guard;
use crate::adapters::conn::Connection;
use crate::adapters::network::{self, NetConfig};
use envoy_abi as abi;
use std::rc::Rc;

type ConfigEnvoy = abi::envoy_dynamic_module_type_network_filter_config_envoy_ptr;
type ConfigModule = abi::envoy_dynamic_module_type_network_filter_config_module_ptr;
type FilterEnvoy = abi::envoy_dynamic_module_type_network_filter_envoy_ptr;
type FilterModule = abi::envoy_dynamic_module_type_network_filter_module_ptr;
type EnvoyBuf = abi::envoy_dynamic_module_type_envoy_buffer;
type Status = abi::envoy_dynamic_module_type_on_network_filter_data_status::Type;
const STOP: Status = abi::envoy_dynamic_module_type_on_network_filter_data_status::StopIteration;

/// # Safety
/// `p` must be a pointer returned by our `new` hook and not yet destroyed.
unsafe fn conn<'a>(p: FilterModule) -> Option<&'a Rc<dyn Connection>> {
    // SAFETY: per the contract above.
    unsafe { (p as *const Rc<dyn Connection>).as_ref() }
}

/// A panic inside a connection's hook closes that connection only.
fn close_after_panic(f: FilterEnvoy) {
    NetFilter(f as usize).close(CloseType::NoFlush, "reverse_tunnel_internal_error");
}

/// Decodes the filter config; NULL (config rejected) with an error log naming the field.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_network_filter_config_new(
    _cfg: ConfigEnvoy,
    name: EnvoyBuf,
    config: EnvoyBuf,
) -> ConfigModule {
    // SAFETY: Envoy's buffers are valid during the hook.
    unsafe { super::config_new("network config_new", &name, &config, NetConfig::new) }
}
const _: abi::envoy_dynamic_module_on_network_filter_config_new_fn = Some(envoy_dynamic_module_on_network_filter_config_new);

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_network_filter_config_destroy(cfg: ConfigModule) {
    // SAFETY: Envoy passes the pointer our config_new returned, once, after its filters.
    unsafe { super::config_drop::<NetConfig>(cfg) }
}
const _: abi::envoy_dynamic_module_on_network_filter_config_destroy_fn =
    Some(envoy_dynamic_module_on_network_filter_config_destroy);

/// Creates the connection object; NULL makes Envoy close the connection.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_network_filter_new(cfg: ConfigModule, f: FilterEnvoy) -> FilterModule {
    // SAFETY: cfg is our config pointer, alive while filters exist.
    let Some(cfg) = (unsafe { (cfg as *const NetConfig).as_ref() }) else { return std::ptr::null() };
    guard("network new", std::ptr::null(), || {
        Box::into_raw(Box::new(network::on_new(cfg, Rc::new(NetFilter(f as usize))))) as FilterModule
    })
}
const _: abi::envoy_dynamic_module_on_network_filter_new_fn = Some(envoy_dynamic_module_on_network_filter_new);

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_network_filter_new_connection(f: FilterEnvoy, m: FilterModule) -> Status {
    // SAFETY: m is our connection pointer.
    if let Some(c) = unsafe { conn(m) } {
        if guard("network new_connection", false, || {
            network::on_new_connection(c);
            true
        }) {
            return STOP;
        }
        close_after_panic(f);
    }
    STOP
}
const _: abi::envoy_dynamic_module_on_network_filter_new_connection_fn =
    Some(envoy_dynamic_module_on_network_filter_new_connection);

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_network_filter_read(f: FilterEnvoy, m: FilterModule, _len: usize, end_stream: bool) -> Status {
    // SAFETY: m is our connection pointer.
    if let Some(c) = unsafe { conn(m) } {
        if !guard("network read", false, || {
            network::on_read(c, end_stream);
            true
        }) {
            close_after_panic(f);
        }
    }
    STOP
}
const _: abi::envoy_dynamic_module_on_network_filter_data_fn = Some(envoy_dynamic_module_on_network_filter_read);

/// Writes pass through untouched.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_network_filter_write(_f: FilterEnvoy, _m: FilterModule, _len: usize, _end: bool) -> Status {
    abi::envoy_dynamic_module_type_on_network_filter_data_status::Continue
}
const _: abi::envoy_dynamic_module_on_network_filter_data_fn = Some(envoy_dynamic_module_on_network_filter_write);

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_network_filter_event(
    _f: FilterEnvoy,
    m: FilterModule,
    event: abi::envoy_dynamic_module_type_network_connection_event::Type,
) {
    // SAFETY: m is our connection pointer.
    if let Some(c) = unsafe { conn(m) } {
        if let Some(event) = ConnectionEvent::from_abi(event) {
            guard("network event", (), || network::on_event(c, event));
        }
    }
}
const _: abi::envoy_dynamic_module_on_network_filter_event_fn = Some(envoy_dynamic_module_on_network_filter_event);

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_network_filter_scheduled(f: FilterEnvoy, m: FilterModule, _event: u64) {
    // SAFETY: m is our connection pointer.
    if let Some(c) = unsafe { conn(m) } {
        if !guard("network scheduled", false, || {
            network::on_scheduled(c);
            true
        }) {
            close_after_panic(f);
        }
    }
}
const _: abi::envoy_dynamic_module_on_network_filter_scheduled_fn = Some(envoy_dynamic_module_on_network_filter_scheduled);

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_network_filter_destroy(m: FilterModule) {
    if m.is_null() {
        return;
    }
    // SAFETY: created by Box::into_raw in `new`; destroyed once.
    let b = unsafe { Box::from_raw(m as *mut Rc<dyn Connection>) };
    guard("network destroy", (), || network::on_destroy(*b));
}
const _: abi::envoy_dynamic_module_on_network_filter_destroy_fn = Some(envoy_dynamic_module_on_network_filter_destroy);
