//! `extern "C"` hooks of the listener filter `reverse_tunnel` (docs/envoy-abi.md#listener-filter):
//! the handshake listener's sockets become the module's own (docs/architecture.md#owned-sockets), all of them
//! (`reverse_tunnel`) or a node's spare tunnels only (`reverse_tunnel_spares`, docs/architecture.md#spare-tunnels).
//! `config_new`/`config_destroy` run on the main thread; every other hook on the worker that
//! accepted the socket, before Envoy made a connection of it. Each hook converts its arguments
//! and calls [`crate::adapters::socket_loop`] inside [`guard`].

use super::envoy::{ListenerSocket, LogLevel};
use super::guard;
use crate::adapters::socket_loop::{self, ListenerConfig};
use envoy_abi as abi;

type ConfigEnvoy = abi::envoy_dynamic_module_type_listener_filter_config_envoy_ptr;
type ConfigModule = abi::envoy_dynamic_module_type_listener_filter_config_module_ptr;
type FilterEnvoy = abi::envoy_dynamic_module_type_listener_filter_envoy_ptr;
type FilterModule = abi::envoy_dynamic_module_type_listener_filter_module_ptr;
type EnvoyBuf = abi::envoy_dynamic_module_type_envoy_buffer;
type Status = abi::envoy_dynamic_module_type_on_listener_filter_status::Type;
const CONTINUE: Status = abi::envoy_dynamic_module_type_on_listener_filter_status::Continue;
const STOP: Status = abi::envoy_dynamic_module_type_on_listener_filter_status::StopIteration;

/// Termination details of Envoy's side of a socket the module took.
const TAKEN_DETAILS: &str = "reverse_tunnel_owned_socket";

/// Decodes the filter config (the handshake filter's own); NULL (config rejected) with an error
/// log naming the field.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_listener_filter_config_new(
    _cfg: ConfigEnvoy,
    name: EnvoyBuf,
    config: EnvoyBuf,
) -> ConfigModule {
    // SAFETY: Envoy's buffers are valid during the hook.
    unsafe { super::config_new("listener config_new", &name, &config, ListenerConfig::new) }
}
const _: abi::envoy_dynamic_module_on_listener_filter_config_new_fn = Some(envoy_dynamic_module_on_listener_filter_config_new);

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_listener_filter_config_destroy(cfg: ConfigModule) {
    // SAFETY: Envoy passes the pointer our config_new returned, once, after its filters.
    unsafe { super::config_drop::<ListenerConfig>(cfg) }
}
const _: abi::envoy_dynamic_module_on_listener_filter_config_destroy_fn =
    Some(envoy_dynamic_module_on_listener_filter_config_destroy);

/// The filter needs nothing of its own: its module pointer is the config's.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_listener_filter_new(cfg: ConfigModule, _f: FilterEnvoy) -> FilterModule {
    cfg as FilterModule
}
const _: abi::envoy_dynamic_module_on_listener_filter_new_fn = Some(envoy_dynamic_module_on_listener_filter_new);

/// `reverse_tunnel`: takes the socket: duplicates Envoy's descriptor, closes Envoy's, hands ours
/// to the socket loop and stops the chain (Envoy makes no connection). If the descriptor cannot
/// be duplicated, the chain continues and the listener's network filters serve the socket as
/// before. `reverse_tunnel_spares`: notes the socket's descriptor and continues.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_listener_filter_on_accept(f: FilterEnvoy, m: FilterModule) -> Status {
    // SAFETY: m is our config pointer, alive while its filters exist.
    let Some(cfg) = (unsafe { (m as *const ListenerConfig).as_ref() }) else { return CONTINUE };
    let socket = ListenerSocket(f as usize);
    guard("listener on_accept", CONTINUE, || match cfg {
        ListenerConfig::Spares => {
            if let Err(e) = socket.remember(crate::runtime::now_ms()) {
                super::envoy::log(LogLevel::Debug, &format!("reverse_tunnel: socket not noted ({e}); it stays an Envoy connection"), file!(), line!());
            }
            CONTINUE
        }
        ListenerConfig::TakeAll(cfg) => {
            let fd = match socket.dup_socket() {
                Ok(fd) => fd,
                Err(e) => {
                    super::envoy::log(LogLevel::Warn, &format!("reverse_tunnel: cannot take the socket ({e}); Envoy keeps it"), file!(), line!());
                    return CONTINUE;
                }
            };
            let worker = socket.worker_index();
            socket.close(TAKEN_DETAILS);
            socket_loop::adopt(cfg, std::net::TcpStream::from(fd), worker);
            STOP
        }
    })
}
const _: abi::envoy_dynamic_module_on_listener_filter_on_accept_fn = Some(envoy_dynamic_module_on_listener_filter_on_accept);

/// Never called: the filter peeks no bytes (`get_max_read_bytes` is 0).
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_listener_filter_on_data(_f: FilterEnvoy, _m: FilterModule, _len: usize) -> Status {
    CONTINUE
}
const _: abi::envoy_dynamic_module_on_listener_filter_on_data_fn = Some(envoy_dynamic_module_on_listener_filter_on_data);

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_listener_filter_on_close(_f: FilterEnvoy, _m: FilterModule) {}
const _: abi::envoy_dynamic_module_on_listener_filter_on_close_fn = Some(envoy_dynamic_module_on_listener_filter_on_close);

/// 0: the filter reads nothing through Envoy (the socket loop reads the handshake itself).
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_listener_filter_get_max_read_bytes(_f: FilterEnvoy, _m: FilterModule) -> usize {
    0
}
const _: abi::envoy_dynamic_module_on_listener_filter_get_max_read_bytes_fn =
    Some(envoy_dynamic_module_on_listener_filter_get_max_read_bytes);

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_listener_filter_destroy(_m: FilterModule) {}
const _: abi::envoy_dynamic_module_on_listener_filter_destroy_fn = Some(envoy_dynamic_module_on_listener_filter_destroy);

/// Required by Envoy; the filter schedules nothing.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_listener_filter_scheduled(_f: FilterEnvoy, _m: FilterModule, _event: u64) {}
const _: abi::envoy_dynamic_module_on_listener_filter_scheduled_fn = Some(envoy_dynamic_module_on_listener_filter_scheduled);
