//! Recording fakes of the Envoy side ([`super::envoy_api`]) for adapter unit tests: a test
//! builds a runtime and connections over [`FakeNetworkFilter`]s, calls the adapters' hook bodies
//! the way Envoy would, and reads back what the adapter asked Envoy to do (writes, closes,
//! metadata). Mailbox messages are not delivered by a scheduler here: [`FakeNetworkFilter`]'s
//! scheduler is inert, and a test delivers queued messages with [`deliver_mail`].

use super::conn::Connection;
use super::endpoint::Sched;
use super::envoy_api::EnvoyNetworkFilter;
use super::network::{self, NetConfig};
use super::worker;
use crate::config::bootstrap::BootstrapConfig;
use crate::ffi::envoy::{CloseType, NetScheduler};
use crate::runtime::Runtime;
use crate::stats::recording::RecordingSink;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

/// One call the adapter made on a connection, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// `write(data, end_stream)`.
    Write(Vec<u8>, bool),
    /// `close(how, details)`.
    Close(CloseType, String),
    /// `set_metadata(namespace, key, value)`.
    Metadata(String, String, String),
}

/// A network-filter connection as Envoy would present it, recording every call.
pub struct FakeNetworkFilter {
    /// Connection id returned by `connection_id`.
    pub id: u64,
    /// Worker index returned by `worker_index`.
    pub worker: u32,
    /// Bytes waiting in the read buffer (`read_into` / `drain_read`).
    pub read_buffer: RefCell<Vec<u8>>,
    /// Filter state objects by key.
    pub filter_state: RefCell<HashMap<String, Vec<u8>>>,
    /// `is_ssl`.
    pub ssl: Cell<bool>,
    /// Given once by `take_socket` (as if listener filter `reverse_tunnel_spares` noted it).
    pub socket: RefCell<Option<std::net::TcpStream>>,
    /// Every call, in order.
    pub calls: RefCell<Vec<Call>>,
}

impl FakeNetworkFilter {
    /// A plain (non-TLS) connection `id` on worker 0.
    pub fn new(id: u64) -> Rc<FakeNetworkFilter> {
        Rc::new(FakeNetworkFilter {
            id,
            worker: 0,
            read_buffer: RefCell::new(Vec::new()),
            filter_state: RefCell::new(HashMap::new()),
            ssl: Cell::new(false),
            socket: RefCell::new(None),
            calls: RefCell::new(Vec::new()),
        })
    }

    /// Everything written so far, concatenated.
    pub fn written(&self) -> Vec<u8> {
        self.calls
            .borrow()
            .iter()
            .filter_map(|c| match c {
                Call::Write(d, _) => Some(d.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Forgets the recorded writes (to look at the next ones alone).
    pub fn clear_writes(&self) {
        self.calls.borrow_mut().retain(|c| !matches!(c, Call::Write(..)));
    }

    /// The closes requested so far.
    pub fn closes(&self) -> Vec<(CloseType, String)> {
        self.calls
            .borrow()
            .iter()
            .filter_map(|c| match c {
                Call::Close(how, d) => Some((*how, d.clone())),
                _ => None,
            })
            .collect()
    }

    /// The metadata set so far, as `(key, value)` pairs of namespace `ns`.
    pub fn metadata(&self, ns: &str) -> Vec<(String, String)> {
        self.calls
            .borrow()
            .iter()
            .filter_map(|c| match c {
                Call::Metadata(n, k, v) if n == ns => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect()
    }
}

impl EnvoyNetworkFilter for FakeNetworkFilter {
    fn read_into(&self, out: &mut Vec<u8>) -> usize {
        let b = self.read_buffer.borrow();
        out.extend_from_slice(&b);
        b.len()
    }
    fn drain_read(&self, len: usize) {
        let mut b = self.read_buffer.borrow_mut();
        let n = len.min(b.len());
        b.drain(..n);
    }
    fn write(&self, data: &[u8], end_stream: bool) {
        self.calls.borrow_mut().push(Call::Write(data.to_vec(), end_stream));
    }
    fn close(&self, how: CloseType, details: &str) {
        self.calls.borrow_mut().push(Call::Close(how, details.to_string()));
    }
    fn ensure_reading(&self) {}
    fn connection_id(&self) -> u64 {
        self.id
    }
    fn worker_index(&self) -> u32 {
        self.worker
    }
    fn remote_address(&self) -> String {
        format!("10.0.0.{}:4000", self.id % 250)
    }
    fn local_address(&self) -> String {
        "127.0.0.1:9000".to_string()
    }
    fn is_ssl(&self) -> bool {
        self.ssl.get()
    }
    fn filter_state(&self, key: &str) -> Option<Vec<u8>> {
        self.filter_state.borrow().get(key).cloned()
    }
    fn set_metadata(&self, namespace: &str, key: &str, value: &str) {
        self.calls.borrow_mut().push(Call::Metadata(namespace.into(), key.into(), value.into()));
    }
    fn take_socket(&self) -> Option<std::net::TcpStream> {
        self.socket.borrow_mut().take()
    }
    fn scheduler_new(&self) -> Sched {
        // Inert in unit tests (the FFI shims are no-ops); mail is delivered by `deliver_mail`.
        Sched::Net(NetScheduler(0))
    }
}

/// A runtime from bootstrap config JSON (`"{}"` for the defaults) with one worker, and the
/// recording sink its metrics go to.
pub fn runtime(bootstrap_json: &str) -> (Arc<Runtime>, RecordingSink) {
    let cfg = BootstrapConfig::decode(bootstrap_json.as_bytes()).expect("bootstrap config");
    let sink = RecordingSink::default();
    (Arc::new(Runtime::with_sink(cfg, Box::new(sink.clone()), 1).expect("runtime")), sink)
}

/// A network filter config of `filter_name` from config JSON over `rt`.
pub fn net_config(rt: &Arc<Runtime>, filter_name: &str, json: &str) -> NetConfig {
    NetConfig::with_runtime(rt.clone(), filter_name, json.as_bytes()).expect("filter config")
}

/// Opens a connection the way Envoy does (`new`, then `new_connection`) over `fake`.
pub fn open(cfg: &NetConfig, fake: &Rc<FakeNetworkFilter>) -> Rc<dyn Connection> {
    let conn = network::on_new(cfg, fake.clone());
    network::on_new_connection(&conn);
    conn
}

/// Puts `bytes` into the read buffer and runs the `read` hook.
pub fn read(conn: &Rc<dyn Connection>, fake: &FakeNetworkFilter, bytes: &[u8], end_stream: bool) {
    fake.read_buffer.borrow_mut().extend_from_slice(bytes);
    network::on_read(conn, end_stream);
}

/// Delivers every queued mailbox message of every connection on this worker (what the
/// schedulers would do), until no mail is left.
pub fn deliver_mail(conns: &[&Rc<dyn Connection>]) {
    loop {
        let mut any = false;
        for c in conns {
            if !c.ep().is_quiet() && c.ep().is_open() {
                any = true;
                network::on_scheduled(c);
            }
        }
        if !any {
            break;
        }
    }
}

/// Runs the worker clock at `now_ms` (what a posted tick does).
pub fn tick(now_ms: u64) {
    for c in worker::due(now_ms) {
        c.on_deadline(now_ms);
    }
}

/// A test's world: a runtime, its recorded metrics, and one config of each network filter.
pub struct Env {
    /// The runtime.
    pub rt: Arc<Runtime>,
    /// Its metrics.
    pub sink: RecordingSink,
    /// `reverse_tunnel` filter config.
    pub handshake: NetConfig,
    /// `reverse_tunnel_egress` filter config.
    pub egress: NetConfig,
}

impl Env {
    /// Bootstrap config and handshake filter config as JSON; default egress config.
    pub fn new(bootstrap_json: &str, handshake_json: &str) -> Env {
        Env::with_egress(bootstrap_json, handshake_json, "")
    }

    /// As [`Env::new`], with egress filter config `egress_json`.
    pub fn with_egress(bootstrap_json: &str, handshake_json: &str, egress_json: &str) -> Env {
        let (rt, sink) = runtime(bootstrap_json);
        let handshake = net_config(&rt, network::HANDSHAKE_FILTER_NAME, handshake_json);
        let egress = net_config(&rt, network::EGRESS_FILTER_NAME, egress_json);
        Env { rt, sink, handshake, egress }
    }
}

/// One call the bootstrap adapter made on Envoy, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootCall {
    /// `signal_init_complete`.
    InitComplete,
    /// `timer_new` (the timer's number, from 0).
    TimerNew(usize),
    /// `enable(delay_ms)` on timer `n`.
    TimerEnable(usize, u64),
    /// `delete` of timer `n`.
    TimerDelete(usize),
    /// `register_admin_handler(path)`.
    AdminHandler(String),
    /// `http_callout(cluster, :path, body)`.
    Callout(String, String, Vec<u8>),
}

/// The bootstrap extension's Envoy side, recording every call; `callout` decides how callouts
/// start.
#[derive(Clone)]
pub struct FakeBootstrap {
    /// Every call, in order (shared with the timers it made).
    pub calls: Rc<RefCell<Vec<BootCall>>>,
    /// What `http_callout` returns.
    pub callout: Rc<Cell<Result<u64, crate::ffi::envoy::CalloutInitError>>>,
}

impl Default for FakeBootstrap {
    fn default() -> FakeBootstrap {
        FakeBootstrap::new()
    }
}

impl FakeBootstrap {
    /// A fake whose callouts start with id 1.
    pub fn new() -> FakeBootstrap {
        FakeBootstrap { calls: Rc::new(RefCell::new(Vec::new())), callout: Rc::new(Cell::new(Ok(1))) }
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<BootCall> {
        self.calls.borrow().clone()
    }
}

struct FakeTimer {
    n: usize,
    calls: Rc<RefCell<Vec<BootCall>>>,
}

impl super::envoy_api::EnvoyTimer for FakeTimer {
    fn enable(&self, delay_ms: u64) {
        self.calls.borrow_mut().push(BootCall::TimerEnable(self.n, delay_ms));
    }
    fn delete(&self) {
        self.calls.borrow_mut().push(BootCall::TimerDelete(self.n));
    }
}

impl super::envoy_api::EnvoyBootstrap for FakeBootstrap {
    fn signal_init_complete(&self) {
        self.calls.borrow_mut().push(BootCall::InitComplete);
    }
    fn timer_new(&self) -> Box<dyn super::envoy_api::EnvoyTimer> {
        let n = self.calls.borrow().iter().filter(|c| matches!(c, BootCall::TimerNew(_))).count();
        self.calls.borrow_mut().push(BootCall::TimerNew(n));
        Box::new(FakeTimer { n, calls: self.calls.clone() })
    }
    fn register_admin_handler(&self, path: &str, _help: &str) -> bool {
        self.calls.borrow_mut().push(BootCall::AdminHandler(path.to_string()));
        true
    }
    fn http_callout(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        _timeout_ms: u64,
    ) -> Result<u64, crate::ffi::envoy::CalloutInitError> {
        let path = headers.iter().find(|(k, _)| *k == ":path").map(|(_, v)| v.to_string()).unwrap_or_default();
        self.calls.borrow_mut().push(BootCall::Callout(cluster.to_string(), path, body.to_vec()));
        self.callout.get()
    }
}

/// One call the route filter made on its HTTP stream, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpCall {
    /// `send_local_reply(status, body)`.
    LocalReply(u32, String),
    /// `send_response_headers(headers, end)`.
    Headers(Vec<(String, String)>, bool),
    /// `send_response_data(bytes, end)`.
    Data(Vec<u8>, bool),
    /// `send_response_trailers(trailers)`.
    Trailers(Vec<(String, String)>),
    /// `reset`.
    Reset,
}

/// The Envoy side of one HTTP stream: request headers, trailers and the current body chunk set by
/// the test; every response call recorded.
#[derive(Default)]
pub struct FakeHttpFilter {
    /// Request headers `request_headers` returns.
    pub headers: RefCell<Vec<(Vec<u8>, Vec<u8>)>>,
    /// Request trailers `request_trailers` returns.
    pub trailers: RefCell<Vec<(Vec<u8>, Vec<u8>)>>,
    /// The current body chunk (taken by `take_received_request_body`).
    pub body: RefCell<Vec<u8>>,
    /// Body Envoy holds for the filter (a test moves a chunk the hook left there with
    /// [`FakeHttpFilter::leave_in_envoy`]).
    pub buffered: RefCell<Vec<u8>>,
    /// Every response call, in order.
    pub calls: RefCell<Vec<HttpCall>>,
}

fn strings(h: &[(&[u8], &[u8])]) -> Vec<(String, String)> {
    h.iter().map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into_owned())).collect()
}

impl FakeHttpFilter {
    /// A stream whose request has these headers.
    pub fn with_headers(headers: &[(&str, &str)]) -> Rc<FakeHttpFilter> {
        let f = FakeHttpFilter::default();
        *f.headers.borrow_mut() = headers.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect();
        Rc::new(f)
    }
}

impl FakeHttpFilter {
    /// What Envoy does after a `request_body` hook answered `StopIterationAndWatermark`: the
    /// current chunk joins the buffered body.
    pub fn leave_in_envoy(&self) {
        let b = std::mem::take(&mut *self.body.borrow_mut());
        self.buffered.borrow_mut().extend_from_slice(&b);
    }
}

impl crate::adapters::envoy_api::EnvoyHttpFilter for FakeHttpFilter {
    fn request_headers(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.headers.borrow().clone()
    }
    fn request_trailers(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.trailers.borrow().clone()
    }
    fn take_received_request_body(&self, out: &mut Vec<u8>) -> usize {
        let b = std::mem::take(&mut *self.body.borrow_mut());
        out.extend_from_slice(&b);
        b.len()
    }
    fn use_received_request_body(&self, use_body: &mut dyn FnMut(&[&[u8]]) -> bool) -> bool {
        let body = self.body.borrow().clone();
        if body.is_empty() {
            return false;
        }
        // Two slices when it can, as Envoy's buffer may hold a chunk in several.
        let (a, b) = body.split_at(body.len() / 2);
        let used = use_body(&[a, b]);
        if used {
            self.body.borrow_mut().clear();
        }
        used
    }
    fn buffered_request_body_len(&self) -> usize {
        self.buffered.borrow().len()
    }
    fn take_buffered_request_body(&self, out: &mut Vec<u8>, max: usize) -> usize {
        let mut b = self.buffered.borrow_mut();
        let n = max.min(b.len());
        out.extend(b.drain(..n));
        n
    }
    fn send_local_reply(&self, status: u32, _headers: &[(&[u8], &[u8])], body: &[u8], _details: &str) {
        self.calls.borrow_mut().push(HttpCall::LocalReply(status, String::from_utf8_lossy(body).into_owned()));
    }
    fn send_response_headers(&self, headers: &[(&[u8], &[u8])], end: bool) {
        self.calls.borrow_mut().push(HttpCall::Headers(strings(headers), end));
    }
    fn send_response_data(&self, data: &[u8], end: bool) {
        self.calls.borrow_mut().push(HttpCall::Data(data.to_vec(), end));
    }
    fn send_response_trailers(&self, trailers: &[(&[u8], &[u8])]) {
        self.calls.borrow_mut().push(HttpCall::Trailers(strings(trailers)));
    }
    fn reset(&self, _details: &str) {
        self.calls.borrow_mut().push(HttpCall::Reset);
    }
}
