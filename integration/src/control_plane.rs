//! A control plane for the reporter tests (`docs/reporter.md`): a tiny HTTP/1.1 server on
//! loopback that records every request (path, host, JSON body, arrival time) and answers with a
//! settable status (200, or e.g. 503 to simulate an outage). Bounded waits only.

use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use crate::http::{body_kind, read_body, read_head};
use crate::{wait_for, Check, Result};

/// Name of the module's HTTP reporter (`docs/reporter.md`).
pub const REPORTER: &str = "envoy.extensions.reverse_tunnel.reporting_service.http";

/// Responder template overrides (`upstream.yaml`'s `REPORTER_CONFIG` and `EXTRA_CLUSTERS`) that
/// turn the reporter on with `fields` (the flow-YAML content of its `google.protobuf.Struct`,
/// e.g. `cluster: control_plane, send_interval: 100ms`) and add a STATIC cluster
/// `control_plane` pointing at 127.0.0.1:`port`.
pub fn reporter_overrides(port: u16, fields: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "REPORTER_CONFIG",
            format!(
                "reporter_config: {{name: {REPORTER}, typed_config: {{\"@type\": type.googleapis.com/google.protobuf.Struct, \
                 value: {{{fields}}}}}}}"
            ),
        ),
        (
            "EXTRA_CLUSTERS",
            format!(
                "- {{name: control_plane, type: STATIC, connect_timeout: 1s, load_assignment: {{cluster_name: control_plane, \
                 endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]}}}}"
            ),
        ),
    ]
}

/// The control plane's view of the responder's tunnels, by tunnel id, after applying the
/// accepted (200) payloads in order: a snapshot replaces everything, `connected` inserts,
/// `disconnected` removes (`docs/reporter.md`).
pub fn view(received: &[Received]) -> BTreeMap<u64, serde_json::Value> {
    let mut v = BTreeMap::new();
    for r in received.iter().filter(|r| r.status == 200) {
        match r.body["kind"].as_str() {
            Some("snapshot") => {
                v.clear();
                for t in r.body["tunnels"].as_array().into_iter().flatten() {
                    v.insert(t["tunnel_id"].as_u64().unwrap_or(0), t.clone());
                }
            }
            Some("events") => {
                for e in r.body["events"].as_array().into_iter().flatten() {
                    let id = e["tunnel_id"].as_u64().unwrap_or(0);
                    if e["event"] == "connected" {
                        v.insert(id, e.clone());
                    } else {
                        v.remove(&id);
                    }
                }
            }
            _ => {}
        }
    }
    v
}

/// One request received by the control plane.
#[derive(Clone, Debug)]
pub struct Received {
    /// When it arrived.
    pub at: Instant,
    /// Request path.
    pub path: String,
    /// `host` header.
    pub host: String,
    /// Status answered.
    pub status: u16,
    /// Body parsed as JSON (Null if it was not JSON).
    pub body: serde_json::Value,
}

/// A control plane: accepts HTTP/1.1 POSTs, records them, answers with the current status.
pub struct ControlPlane {
    /// Listening port on 127.0.0.1.
    pub port: u16,
    status: Arc<AtomicU16>,
    log: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl ControlPlane {
    /// Starts the server on a free loopback port, answering 200.
    pub fn start() -> Result<ControlPlane> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let status = Arc::new(AtomicU16::new(200));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, l, st) = (status.clone(), log.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (s, l) = (s.clone(), l.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &s, &l);
                });
            }
        });
        Ok(ControlPlane { port, status, log, stop, accept: Some(accept) })
    }

    /// Sets the status of the following answers (e.g. 503 for an outage).
    pub fn set_status(&self, s: u16) {
        self.status.store(s, Ordering::SeqCst);
    }

    /// Every request received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until a payload received at index `from` or later satisfies `pred`; returns its
    /// index.
    pub fn wait_payload(&self, what: &str, from: usize, timeout: Duration, pred: impl Fn(&Received) -> bool) -> Result<usize> {
        wait_for(what, timeout, || {
            let r = self.received();
            Ok(match r.iter().skip(from).position(&pred) {
                Some(i) => Check::Done(from + i),
                None => Check::NotYet(format!("{} payload(s), last: {:?}", r.len(), r.last().map(|x| x.body.to_string()))),
            })
        })
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn serve(conn: TcpStream, status: &AtomicU16, log: &Mutex<Vec<Received>>) -> Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn);
    while let Some((start, headers)) = read_head(&mut reader)? {
        let body = read_body(&mut reader, body_kind(&headers, true)?)?;
        let code = status.load(Ordering::SeqCst);
        let host = headers.iter().find(|(k, _)| k == "host").map(|(_, v)| v.clone()).unwrap_or_default();
        let path = start.split_whitespace().nth(1).unwrap_or("").to_string();
        let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        log.lock().unwrap_or_else(|p| p.into_inner()).push(Received { at: Instant::now(), path, host, status: code, body });
        let text = if code == 200 { "ok" } else { "unavailable" };
        let resp = format!("HTTP/1.1 {code} X\r\ncontent-length: {}\r\n\r\n{text}", text.len());
        reader.get_mut().write_all(resp.as_bytes())?;
    }
    let _ = reader.get_ref().shutdown(Shutdown::Both);
    Ok(())
}
