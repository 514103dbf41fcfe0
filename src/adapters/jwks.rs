//! Key sets of the handshake filter's `jwt_validator` (docs/protocol.md#jwt-on-the-handshake):
//! the shared cell workers read ([`KeyCell`]) and the background fetcher of `remote_jwks`
//! ([`JwksRegistry`]).
//!
//! Threads: workers only call [`KeyCell::get`] (a read lock held for one `Arc` clone). Every
//! other function runs on Envoy's **main thread**: filter `config_new` registers a source, the
//! bootstrap extension's clock timer calls [`JwksRegistry::tick`], which starts fetches with the
//! bootstrap HTTP callout (docs/envoy-abi.md#bootstrap-callbacks), and `http_callout_done` hands
//! results to [`JwksRegistry::callout_done`]. So fetching needs the bootstrap extension
//! `upstream_socket_interface` (the handshake filter needs it anyway) and starts once the server
//! is initialized.
//!
//! Schedule of one source: first fetch at the first tick; after a success, again after
//! `cache_duration`; after a failure, the retry policy's backoff (base doubled per retry, at most
//! `max_interval`, `num_retries` times), then `failed_refetch_duration`. A failure never drops the
//! last good keys. Before the first success the set is empty and every token fails. One fetch per
//! source is in flight at a time; a callout Envoy finishes synchronously inside `http_callout` is
//! kept until its id is known, and one never answered within `timeout` + 5 s counts as failed.

use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};

use crate::config::jwt::{RemoteJwksConfig, MAX_JWKS_BYTES};
use crate::core::jwt::KeySet;
use crate::rt_log;

/// The current key set of one `jwt_validator`: read by workers per handshake, replaced by the
/// fetcher. Cloning the `Arc` under a read lock keeps the lock time to nanoseconds.
#[derive(Default)]
pub struct KeyCell(RwLock<Arc<KeySet>>);

impl KeyCell {
    /// A cell holding `keys`.
    pub fn new(keys: Arc<KeySet>) -> KeyCell {
        KeyCell(RwLock::new(keys))
    }
    /// The current keys (any thread).
    pub fn get(&self) -> Arc<KeySet> {
        self.0.read().clone()
    }
    /// Replaces the keys (main thread).
    pub fn set(&self, keys: Arc<KeySet>) {
        *self.0.write() = keys;
    }
}

/// Where one `jwt_validator` reads its keys from: a local set parsed at config load, or the
/// cell of a remote source.
pub enum JwtKeys {
    /// `local_jwks`.
    Local(Arc<KeySet>),
    /// `remote_jwks` (registered in the runtime's [`JwksRegistry`]).
    Remote(Arc<RemoteJwks>),
}

impl JwtKeys {
    /// The keys to verify with now (any thread; empty for a remote source before its first
    /// successful fetch).
    pub fn get(&self) -> Arc<KeySet> {
        match self {
            JwtKeys::Local(k) => k.clone(),
            JwtKeys::Remote(r) => r.keys.get(),
        }
    }
}

/// Fetch progress of one remote source (main thread only; behind a mutex for `Sync`).
#[derive(Debug, Default)]
struct FetchState {
    /// Monotonic ms at which the next fetch may start.
    next_due_ms: u64,
    /// Callout id of the fetch in flight, and when it started (monotonic ms).
    in_flight: Option<u64>,
    in_flight_since_ms: u64,
    /// Retries used since the last success or the last `failed_refetch` pause.
    retries: u32,
    /// Successful and failed fetches so far.
    ok: u64,
    failed: u64,
}

/// One `remote_jwks`: its config, its key cell, its fetch state.
pub struct RemoteJwks {
    /// The validated `remote_jwks`.
    pub config: RemoteJwksConfig,
    /// The keys workers read; empty until the first successful fetch.
    pub keys: KeyCell,
    state: Mutex<FetchState>,
}

impl RemoteJwks {
    /// (successful, failed) fetches so far.
    pub fn fetch_counts(&self) -> (u64, u64) {
        let s = self.state.lock();
        (s.ok, s.failed)
    }

    /// Records a failed fetch at `now_ms` and schedules the next one.
    fn failed(&self, now_ms: u64, why: &str) {
        let mut s = self.state.lock();
        s.in_flight = None;
        s.failed += 1;
        let c = &self.config;
        let wait = if s.retries < c.num_retries {
            s.retries += 1;
            let backoff = c.retry_base.saturating_mul(1u32 << (s.retries - 1).min(20));
            backoff.min(c.retry_max)
        } else {
            s.retries = 0;
            c.failed_refetch
        };
        s.next_due_ms = now_ms + wait.as_millis() as u64;
        let kept = self.keys.get().len();
        drop(s);
        rt_log!(
            Warn,
            "reverse_tunnel: jwt_validator.remote_jwks fetch of {} failed ({why}); keeping {kept} cached key(s), next try in {}ms",
            c.uri,
            wait.as_millis()
        );
    }

    /// Records a successful fetch of `keys` at `now_ms`.
    fn succeeded(&self, now_ms: u64, keys: KeySet) {
        let n = keys.len();
        self.keys.set(Arc::new(keys));
        let mut s = self.state.lock();
        s.in_flight = None;
        s.retries = 0;
        s.ok += 1;
        s.next_due_ms = now_ms + self.config.cache_duration.as_millis() as u64;
        let first = s.ok == 1;
        drop(s);
        if first {
            rt_log!(Info, "reverse_tunnel: jwt_validator.remote_jwks fetched {n} key(s) from {}", self.config.uri);
        } else {
            rt_log!(Debug, "reverse_tunnel: jwt_validator.remote_jwks fetched {n} key(s) from {}", self.config.uri);
        }
    }
}

/// A callout result that arrived before its id was known: (callout id, response body or
/// failure reason).
type EarlyResult = (u64, Result<Vec<u8>, String>);

/// Every remote JWKS source of the process (one per filter config with `remote_jwks`); held
/// weakly, so a source goes away with its filter config.
#[derive(Default)]
pub struct JwksRegistry {
    sources: Mutex<Vec<Weak<RemoteJwks>>>,
    /// True while [`JwksRegistry::tick`] is inside a `start` call: Envoy may finish a callout
    /// synchronously, inside `http_callout`, before its id is known here.
    starting: Mutex<bool>,
    /// A result that arrived that way.
    early: Mutex<Option<EarlyResult>>,
}

/// Grace after a fetch's own timeout before a callout that never finished counts as failed
/// (Envoy always calls back; this only bounds the damage if it did not).
const STUCK_GRACE_MS: u64 = 5_000;

/// What a finished callout gave: `Ok(body)` for a 200 response, `Err(reason)` otherwise.
pub type FetchResult<'a> = Result<&'a [u8], String>;

impl JwksRegistry {
    /// Registers a source (filter `config_new`, main thread); its first fetch starts at the next
    /// tick. The caller keeps the returned `Arc`.
    pub fn register(&self, config: RemoteJwksConfig) -> Arc<RemoteJwks> {
        let source = Arc::new(RemoteJwks { config, keys: KeyCell::default(), state: Mutex::new(FetchState::default()) });
        let mut list = self.sources.lock();
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&source));
        source
    }

    /// Clock tick (main thread): starts the fetches that are due with `start(config)`, which
    /// returns the callout id or why it could not start (a start failure counts as a failed fetch).
    pub fn tick(&self, now_ms: u64, mut start: impl FnMut(&RemoteJwksConfig) -> Result<u64, String>) {
        let live: Vec<Arc<RemoteJwks>> = {
            let mut list = self.sources.lock();
            list.retain(|w| w.strong_count() > 0);
            list.iter().filter_map(Weak::upgrade).collect()
        };
        for src in live {
            {
                let s = src.state.lock();
                if s.in_flight.is_some() {
                    let limit = s.in_flight_since_ms + src.config.timeout.as_millis() as u64 + STUCK_GRACE_MS;
                    if now_ms < limit {
                        continue;
                    }
                    drop(s);
                    src.failed(now_ms, "no answer from the callout");
                    continue;
                }
                if now_ms < s.next_due_ms {
                    continue;
                }
            }
            *self.starting.lock() = true;
            let started = start(&src.config);
            *self.starting.lock() = false;
            let early = self.early.lock().take();
            match started {
                Ok(id) => match early {
                    Some((eid, result)) if eid == id => src.finish(now_ms, result.as_deref().map_err(String::clone)),
                    _ => {
                        let mut s = src.state.lock();
                        s.in_flight = Some(id);
                        s.in_flight_since_ms = now_ms;
                    }
                },
                Err(why) => src.failed(now_ms, &why),
            }
        }
    }

    /// A callout finished (main thread). Returns false when `id` is not a JWKS fetch (then it
    /// belongs to the reporter). A 200 whose body parses as a JWKS with a usable key replaces the
    /// keys; anything else is a failure that keeps them.
    pub fn callout_done(&self, id: u64, result: FetchResult<'_>, now_ms: u64) -> bool {
        let src = {
            let list = self.sources.lock();
            list.iter().filter_map(Weak::upgrade).find(|s| s.state.lock().in_flight == Some(id))
        };
        let Some(src) = src else {
            if *self.starting.lock() {
                // Finished inside our own `http_callout`: `tick` picks it up once the id is known.
                *self.early.lock() = Some((id, result.map(<[u8]>::to_vec)));
                return true;
            }
            return false;
        };
        src.finish(now_ms, result);
        true
    }
}

impl RemoteJwks {
    /// Applies the result of this source's fetch: a JWKS with a usable key replaces the keys;
    /// anything else is a failure that keeps them.
    fn finish(&self, now_ms: u64, result: FetchResult<'_>) {
        let parsed = result.and_then(|body| {
            if body.len() > MAX_JWKS_BYTES {
                return Err(format!("body larger than {MAX_JWKS_BYTES} bytes"));
            }
            let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8".to_string())?;
            KeySet::parse(text).map_err(|e| format!("bad JWKS: {e}"))
        });
        match parsed {
            Ok(keys) => self.succeeded(now_ms, keys),
            Err(why) => self.failed(now_ms, &why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const JWKS: &str = r#"{"keys": [{"kty": "oct", "kid": "k1", "k": "c2VjcmV0LWZvci10ZXN0cy1vbmx5"}]}"#;

    fn config(num_retries: u32) -> RemoteJwksConfig {
        RemoteJwksConfig {
            uri: "http://jwks/keys".into(),
            host: "jwks".into(),
            path: "/keys".into(),
            cluster: "jwks".into(),
            timeout: Duration::from_secs(1),
            cache_duration: Duration::from_secs(600),
            fast_listener: false,
            failed_refetch: Duration::from_secs(2),
            num_retries,
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_millis(250),
        }
    }

    /// Ticks at `now` and returns the paths of the fetches started (ids from `next_id`).
    fn tick(reg: &JwksRegistry, now: u64, next_id: &mut u64) -> Vec<u64> {
        let mut started = Vec::new();
        reg.tick(now, |_| {
            *next_id += 1;
            started.push(*next_id);
            Ok(*next_id)
        });
        started
    }

    #[test]
    fn fetch_cache_refresh_and_outage_keep_the_last_keys() {
        let reg = JwksRegistry::default();
        let src = reg.register(config(0));
        assert!(src.keys.get().is_empty());
        let mut id = 0;
        assert_eq!(tick(&reg, 1000, &mut id), vec![1]);
        assert!(tick(&reg, 1050, &mut id).is_empty(), "one fetch in flight at a time");
        assert!(!reg.callout_done(99, Ok(b"x"), 1100), "not ours");
        assert!(reg.callout_done(1, Ok(JWKS.as_bytes()), 1100));
        assert_eq!(src.keys.get().len(), 1);
        // Cached for cache_duration.
        assert!(tick(&reg, 1100 + 599_999, &mut id).is_empty());
        assert_eq!(tick(&reg, 1100 + 600_000, &mut id), vec![2]);
        // Outage: keys kept, retried after failed_refetch.
        assert!(reg.callout_done(2, Err("reset".into()), 700_000));
        assert_eq!(src.keys.get().len(), 1);
        assert!(tick(&reg, 701_999, &mut id).is_empty());
        assert_eq!(tick(&reg, 702_000, &mut id), vec![3]);
        // A bad body is a failure too.
        assert!(reg.callout_done(3, Ok(b"{\"keys\": []}"), 702_010));
        assert_eq!(src.keys.get().len(), 1);
        assert_eq!(src.fetch_counts(), (1, 2));
    }

    #[test]
    fn retry_policy_backoff_then_failed_refetch() {
        // base 100 ms doubled, capped at 250 ms, 3 retries; then failed_refetch 2 s; then again.
        let reg = JwksRegistry::default();
        let _src = reg.register(config(3));
        let mut id = 0;
        let mut now = 0;
        assert_eq!(tick(&reg, now, &mut id), vec![1]);
        let mut waits = Vec::new();
        for _ in 0..5 {
            assert!(reg.callout_done(id, Err("503".into()), now));
            let mut t = now;
            while tick(&reg, t, &mut id).is_empty() {
                t += 1;
            }
            waits.push(t - now);
            now = t;
        }
        assert_eq!(waits, vec![100, 200, 250, 2000, 100]);
    }

    #[test]
    fn a_callout_finished_inside_http_callout_is_not_lost() {
        let reg = JwksRegistry::default();
        let src = reg.register(config(0));
        // Envoy calls back synchronously, before `start` returns the id.
        reg.tick(0, |_| {
            assert!(reg.callout_done(5, Ok(JWKS.as_bytes()), 0), "claimed while starting");
            Ok(5)
        });
        assert_eq!(src.keys.get().len(), 1);
        assert_eq!(src.fetch_counts(), (1, 0));
        // Not in flight any more: the next fetch follows the cache duration.
        let mut id = 10;
        assert!(tick(&reg, 599_999, &mut id).is_empty());
        assert_eq!(tick(&reg, 600_000, &mut id), vec![11]);
        // Outside a start, an unknown id is not ours (the reporter's).
        assert!(!reg.callout_done(77, Ok(b""), 600_001));
    }

    #[test]
    fn a_callout_that_never_finishes_counts_as_failed() {
        let reg = JwksRegistry::default();
        let src = reg.register(config(0));
        let mut id = 0;
        assert_eq!(tick(&reg, 0, &mut id), vec![1]);
        // timeout 1 s + 5 s grace.
        assert!(tick(&reg, 5_999, &mut id).is_empty());
        assert!(tick(&reg, 6_000, &mut id).is_empty());
        assert_eq!(src.fetch_counts(), (0, 1));
        assert_eq!(tick(&reg, 8_000, &mut id), vec![2], "after failed_refetch (2 s)");
        // The late answer of the abandoned callout is not taken.
        assert!(!reg.callout_done(1, Ok(JWKS.as_bytes()), 8_001));
        assert!(src.keys.get().is_empty());
    }

    #[test]
    fn start_failure_counts_and_dropped_sources_go_away() {
        let reg = JwksRegistry::default();
        let src = reg.register(config(0));
        reg.tick(0, |_| Err("cluster 'jwks' not found".into()));
        assert_eq!(src.fetch_counts(), (0, 1));
        drop(src);
        let mut id = 0;
        assert!(tick(&reg, 10_000, &mut id).is_empty());
    }
}
