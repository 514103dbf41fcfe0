//! Adapter for the bootstrap extension `upstream_socket_interface` (config: the built-in's
//! `UpstreamReverseConnectionSocketInterface`). All functions run on the main thread.
//!
//! It owns the [`Runtime`] (tracker, stats), signals init complete, runs the worker clock (one
//! main-thread timer that posts a tick to each worker, design §6), serves the admin endpoint
//! `/reverse_tunnels`, and on drain/shutdown refuses new handshakes.

use crate::config::bootstrap::BootstrapConfig;
use crate::core::tracker::TunnelState;
use crate::ffi::envoy::{self, BootstrapConfigHandle, BootstrapTimer};
use crate::runtime::{Runtime, RUNTIME};
use crate::rt_log;
use parking_lot::Mutex;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Period of the worker clock (ms): deadlines are met within this much.
pub const CLOCK_PERIOD_MS: u64 = 100;

/// Admin path of the tunnel listing.
pub const ADMIN_PATH: &str = "/reverse_tunnels";

/// The module-side object of the bootstrap extension config.
pub struct BootstrapExtension {
    /// Envoy's config pointer.
    pub handle: BootstrapConfigHandle,
    /// The shared runtime.
    pub runtime: Arc<Runtime>,
    timer: Mutex<Option<BootstrapTimer>>,
}

/// `config_new`: decodes the config, defines metrics, publishes the runtime and signals init
/// complete. Errors name the field; the caller logs them and Envoy refuses to start.
pub fn config_new(handle: BootstrapConfigHandle, name: &str, config: &[u8]) -> Result<BootstrapExtension, String> {
    if name != "upstream_socket_interface" {
        return Err(format!("extension_name: unknown bootstrap extension '{name}' (expected 'upstream_socket_interface')"));
    }
    let cfg = BootstrapConfig::decode(config).map_err(|e| format!("upstream_socket_interface config: {e}"))?;
    let concurrency = envoy::concurrency();
    rt_log!(
        Info,
        "reverse_tunnel: upstream_socket_interface stat_prefix={} ping_failure_threshold={} tenant_isolation={} workers={}",
        cfg.stat_prefix,
        cfg.ping_failure_threshold,
        cfg.enable_tenant_isolation,
        concurrency
    );
    let runtime = Arc::new(Runtime::new(cfg, handle, concurrency));
    *RUNTIME.write() = Some(runtime.clone());
    handle.signal_init_complete();
    Ok(BootstrapExtension { handle, runtime, timer: Mutex::new(None) })
}

impl BootstrapExtension {
    /// `server_initialized`: starts the worker clock and registers the admin endpoint.
    pub fn server_initialized(&self) {
        let t = self.handle.timer_new();
        t.enable(CLOCK_PERIOD_MS);
        *self.timer.lock() = Some(t);
        if !self.handle.register_admin_handler(ADMIN_PATH, "reverse_tunnel: list tunnels by tenant, cluster and node (JSON)") {
            rt_log!(Warn, "reverse_tunnel: could not register admin handler {ADMIN_PATH}");
        }
    }

    /// `timer_fired`: one clock period elapsed.
    pub fn timer_fired(&self, timer: BootstrapTimer) {
        self.runtime.post_ticks();
        timer.enable(CLOCK_PERIOD_MS);
    }

    /// `drain_started`: new handshakes are refused from now on.
    pub fn drain_started(&self) {
        self.runtime.draining.store(true, Ordering::Relaxed);
        rt_log!(Info, "reverse_tunnel: drain started, refusing new handshakes");
    }

    /// `shutdown`: stop the clock; the caller then calls the completion callback.
    pub fn shutdown(&self) {
        self.runtime.draining.store(true, Ordering::Relaxed);
        if let Some(t) = self.timer.lock().take() {
            t.delete();
        }
    }

    /// `admin_request` for [`ADMIN_PATH`]: returns (status, body).
    pub fn admin_request(&self, _method: &str, path: &str) -> (u32, Vec<u8>) {
        if path != ADMIN_PATH && !path.starts_with(&format!("{ADMIN_PATH}?")) {
            return (404, b"not found\n".to_vec());
        }
        (200, admin_json(&self.runtime).into_bytes())
    }

    /// `config_destroy`: unpublishes the runtime.
    pub fn destroy(&self) {
        let mut g = RUNTIME.write();
        if g.as_ref().is_some_and(|r| Arc::ptr_eq(r, &self.runtime)) {
            *g = None;
        }
    }
}

/// The tunnel listing as JSON: totals and one object per tunnel.
pub fn admin_json(rt: &Runtime) -> String {
    let counts = rt.tracker.counts();
    let tunnels: Vec<serde_json::Value> = rt
        .tracker
        .snapshot()
        .into_iter()
        .map(|t| {
            serde_json::json!({
                "tunnel": t.tunnel,
                "worker": format!("worker_{}", t.worker),
                "node_id": t.identity.node_id,
                "cluster_id": t.identity.cluster_id,
                "tenant_id": t.identity.tenant_id,
                "state": match t.state { TunnelState::Idle => "idle", TunnelState::InUse => "in_use" },
                "remote_address": t.meta.remote_address,
                "initiator_worker_id": t.meta.initiator_worker_id,
                "initiator_connection_id": t.meta.initiator_connection_id,
                "registered_at_ms": t.meta.registered_at_ms,
            })
        })
        .collect();
    let v = serde_json::json!({
        "idle": counts.idle,
        "in_use": counts.in_use,
        "nodes": counts.nodes,
        "clusters": counts.clusters,
        "tunnels": tunnels,
    });
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_else(|_| "{}".into());
    s.push('\n');
    s
}
