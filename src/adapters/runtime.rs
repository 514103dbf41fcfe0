//! Process-wide state shared by the three extension points and all workers.
//!
//! The bootstrap extension creates the [`Runtime`] in `config_new` (main thread) and publishes
//! it in [`RUNTIME`]; network filter configs take an `Arc` of it in their own `config_new`.
//! Everything here is `Sync`: the tracker locks internally, stats are atomic in Envoy, and the
//! per-worker clock registry is a small mutex per worker.

use crate::adapters::endpoint::Endpoint;
use crate::adapters::lifecycle::{AccessLogError, LifecycleLog};
use crate::config::bootstrap::BootstrapConfig;
use crate::core::tracker::Tracker;
use crate::ffi::envoy::BootstrapConfigHandle;
use crate::stats::{MetricSink, Stats, StatsOptions, DEFAULT_MAX_SERIES, MAX_SERIES_RUNTIME_KEY};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The runtime of the loaded bootstrap extension, if any.
pub static RUNTIME: RwLock<Option<Arc<Runtime>>> = RwLock::new(None);

/// Returns the current runtime (None before the bootstrap extension is configured).
pub fn current() -> Option<Arc<Runtime>> {
    RUNTIME.read().clone()
}

pub use crate::clock::{now_ms, unix_ms};

/// Shared state of the responder.
pub struct Runtime {
    /// The decoded bootstrap config (`UpstreamReverseConnectionSocketInterface`).
    pub config: BootstrapConfig,
    /// Every registered tunnel, by node, cluster and tenant; the handle is the tunnel's endpoint.
    pub tracker: Tracker<Arc<Endpoint>>,
    /// Metric ids and update helpers (`crate::stats`).
    pub stats: Stats,
    /// Worker count (`--concurrency`).
    pub concurrency: u32,
    /// Per worker: endpoints of live handshake/tunnel connections, used to post the clock tick
    /// to that worker (docs/architecture.md#threads-and-the-clock).
    pub clocks: Vec<Mutex<WorkerClock>>,
    /// Set when Envoy starts draining or shutting down: new handshakes get 503.
    pub draining: AtomicBool,
    /// The lifecycle access log (bootstrap `access_log`), written off the workers.
    pub lifecycle: LifecycleLog,
    /// Also log `idle_ping_sent` / `idle_ping_ack` (two lines per tunnel per interval): Envoy
    /// runtime key [`PING_EVENTS_RUNTIME_KEY`], read at startup, default false.
    pub log_ping_events: bool,
    /// The HTTP reporter (bootstrap `reporter_config`), if configured: workers push tunnel
    /// events into its bounded queue, the main thread sends them (`adapters::reporter`).
    pub reporter: Option<crate::adapters::reporter::ReporterHandle>,
    /// Remote JWKS sources of the handshake filters' `jwt_validator`, fetched by the bootstrap
    /// extension's clock (`adapters::jwks`).
    pub jwks: crate::adapters::jwks::JwksRegistry,
    /// The socket loops serving owned sockets (`adapters::socket_loop`), started on first use.
    pub socket_loops: crate::adapters::socket_loop::SocketLoops,
}

/// Runtime key that turns on the noisy `idle_ping_sent` / `idle_ping_ack` lifecycle events.
pub const PING_EVENTS_RUNTIME_KEY: &str = "reverse_tunnel.lifecycle.ping_events";

/// The connections through which a worker's clock tick can be delivered.
#[derive(Default)]
pub struct WorkerClock {
    /// Live endpoints on this worker, by connection id.
    pub endpoints: HashMap<u64, Arc<Endpoint>>,
    /// True while a tick is posted and not yet run (ticks never pile up).
    pub tick_pending: bool,
}

impl Runtime {
    /// Builds the runtime; defines every metric (only possible during bootstrap `config_new`).
    /// Errors (an access log file that cannot be opened) name the field.
    pub fn new(config: BootstrapConfig, handle: BootstrapConfigHandle, concurrency: u32) -> Result<Runtime, AccessLogError> {
        Runtime::with_sink(config, Box::new(handle), concurrency)
    }

    /// [`Runtime::new`] with metrics going to `sink` (Envoy in the module, a recording sink in
    /// unit tests).
    pub fn with_sink(
        config: BootstrapConfig,
        sink: Box<dyn MetricSink>,
        concurrency: u32,
    ) -> Result<Runtime, AccessLogError> {
        let lifecycle = LifecycleLog::new(&config.access_log)?;
        let max_series = crate::ffi::envoy::runtime_u64(MAX_SERIES_RUNTIME_KEY, DEFAULT_MAX_SERIES as u64);
        let stats = Stats::define(
            sink,
            &StatsOptions {
                prefix: config.stat_prefix.clone(),
                concurrency,
                detailed: config.enable_detailed_stats,
                tenant_isolation: config.enable_tenant_isolation,
                max_series: max_series as usize,
            },
        );
        if config.enable_detailed_stats {
            crate::rt_log!(
                Info,
                "reverse_tunnel: detailed stats on: {}.tunnels per node, at most {} label sets",
                config.stat_prefix,
                max_series
            );
        }
        let tracker = Tracker::new(config.enable_tenant_isolation);
        let workers = concurrency.max(1);
        let reporter = config.reporter.clone().map(crate::adapters::reporter::ReporterHandle::new);
        Ok(Runtime {
            config,
            tracker,
            stats,
            concurrency: workers,
            clocks: (0..workers).map(|_| Mutex::new(WorkerClock::default())).collect(),
            draining: AtomicBool::new(false),
            lifecycle,
            log_ping_events: crate::ffi::envoy::runtime_bool(PING_EVENTS_RUNTIME_KEY, false),
            reporter,
            jwks: Default::default(),
            socket_loops: Default::default(),
        })
    }

    /// True once drain or shutdown started.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Adds `ep` to its worker's clock registry.
    pub fn clock_register(&self, ep: &Arc<Endpoint>) {
        if let Some(c) = self.clocks.get(ep.worker as usize) {
            c.lock().endpoints.insert(ep.conn_id, ep.clone());
        }
    }

    /// Removes the endpoint of connection `conn_id` on `worker` from the clock registry.
    pub fn clock_unregister(&self, worker: u32, conn_id: u64) {
        if let Some(c) = self.clocks.get(worker as usize) {
            c.lock().endpoints.remove(&conn_id);
        }
    }

    /// Main thread, every clock period: posts one tick to each worker that has connections and
    /// no tick pending. Cost: O(workers).
    pub fn post_ticks(&self) {
        for clock in &self.clocks {
            let mut c = clock.lock();
            if c.tick_pending {
                continue;
            }
            let mut dead = Vec::new();
            let mut posted = false;
            for (id, ep) in c.endpoints.iter() {
                if ep.post_tick() {
                    posted = true;
                    break;
                }
                dead.push(*id);
            }
            for id in dead {
                c.endpoints.remove(&id);
            }
            c.tick_pending = posted;
        }
    }

    /// Worker thread, when its tick runs: allows the next tick to be posted.
    pub fn tick_done(&self, worker: u32) {
        if let Some(c) = self.clocks.get(worker as usize) {
            c.lock().tick_pending = false;
        }
    }
}
