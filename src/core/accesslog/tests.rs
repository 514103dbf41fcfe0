//! Tests of the lifecycle log formatter, including lines of the built-in's own log.

use super::*;
use serde_json::json;

/// Lines the built-in 1.40.0 responder logged (docs/protocol.md#lifecycle-log), one per event kind
/// and close reason, in the JSON format of [`up4_format`].
const SAMPLES: &str = r#"{"duration_ms":0,"fs_cluster":"downstream-cluster","fs_fd":"36","fs_init_conn":"0","fs_init_worker":"worker_1","fs_node":"downstream-node","fs_tenant":"downstream-tenant","fs_worker":"worker_1","lifecycle":{"cluster_id":"downstream-cluster","event":"tunnel_setup","fd":36,"initiator_connection_id":"0","initiator_worker_id":"worker_1","node_id":"downstream-node","socket_state":"idle","tenant_id":"downstream-tenant","worker":"worker_1"},"local":"127.0.0.1:19010","log_type":"TcpUpstreamConnected","remote":"127.0.0.1:58760","term":null,"ts":"2026-11-22T02:52:10.845Z"}
{"duration_ms":0,"fs_cluster":"downstream-cluster","fs_fd":"35","fs_init_conn":"1","fs_init_worker":"worker_0","fs_node":"downstream-node","fs_tenant":"downstream-tenant","fs_worker":"worker_0","lifecycle":{"cluster_id":"downstream-cluster","event":"idle_ping_sent","fd":35,"initiator_connection_id":"1","initiator_worker_id":"worker_0","node_id":"downstream-node","socket_state":"idle","tenant_id":"downstream-tenant","worker":"worker_0"},"local":"127.0.0.1:19010","log_type":"TcpUpstreamConnected","remote":"127.0.0.1:58752","term":null,"ts":"2026-11-22T02:52:12.923Z"}
{"duration_ms":0,"fs_cluster":"downstream-cluster","fs_fd":"35","fs_init_conn":"1","fs_init_worker":"worker_0","fs_node":"downstream-node","fs_tenant":"downstream-tenant","fs_worker":"worker_0","lifecycle":{"cluster_id":"downstream-cluster","event":"idle_ping_ack","fd":35,"initiator_connection_id":"1","initiator_worker_id":"worker_0","node_id":"downstream-node","socket_state":"idle","tenant_id":"downstream-tenant","worker":"worker_0"},"local":"127.0.0.1:19010","log_type":"TcpUpstreamConnected","remote":"127.0.0.1:58752","term":null,"ts":"2026-11-22T02:52:12.923Z"}
{"duration_ms":0,"fs_cluster":"downstream-cluster","fs_fd":"36","fs_init_conn":"0","fs_init_worker":"worker_1","fs_node":"downstream-node","fs_tenant":"downstream-tenant","fs_worker":"worker_1","lifecycle":{"cluster_id":"downstream-cluster","event":"socket_handoff","fd":36,"handoff_kind":"pool_to_upstream","initiator_connection_id":"0","initiator_worker_id":"worker_1","node_id":"downstream-node","socket_state":"handed_off","tenant_id":"downstream-tenant","worker":"worker_1"},"local":"127.0.0.1:19010","log_type":"UpstreamPoolReady","remote":"127.0.0.1:58760","term":null,"ts":"2026-11-22T02:52:20.953Z"}
{"duration_ms":0,"fs_cluster":"pycluster","fs_fd":"37","fs_init_conn":null,"fs_init_worker":null,"fs_node":"pynode","fs_tenant":"pytenant","fs_worker":"worker_1","lifecycle":{"close_reason":"idle_peer_close","cluster_id":"pycluster","event":"tunnel_closed","fd":37,"initiator_connection_id":"","initiator_worker_id":"","node_id":"pynode","socket_state":"idle","tenant_id":"pytenant","worker":"worker_1"},"local":"127.0.0.1:19010","log_type":"TcpConnectionEnd","remote":"127.0.0.1:44950","term":"idle_peer_close","ts":"2026-11-22T02:52:51.586Z"}
{"duration_ms":0,"fs_cluster":"pykacluster","fs_fd":"37","fs_init_conn":null,"fs_init_worker":null,"fs_node":"pyka","fs_tenant":"pykatenant","fs_worker":"worker_1","lifecycle":{"cluster_id":"pykacluster","event":"idle_ping_miss","fd":37,"initiator_connection_id":"","initiator_worker_id":"","miss_count":"1","node_id":"pyka","socket_state":"idle","tenant_id":"pykatenant","worker":"worker_1"},"local":"127.0.0.1:19010","log_type":"TcpUpstreamConnected","remote":"127.0.0.1:45064","term":null,"ts":"2026-11-22T02:53:07.592Z"}
{"duration_ms":0,"fs_cluster":"pykacluster","fs_fd":"37","fs_init_conn":null,"fs_init_worker":null,"fs_node":"pyka","fs_tenant":"pykatenant","fs_worker":"worker_1","lifecycle":{"cluster_id":"pykacluster","event":"idle_ping_timeout","fd":37,"initiator_connection_id":"","initiator_worker_id":"","miss_count":"3","node_id":"pyka","socket_state":"idle","tenant_id":"pykatenant","worker":"worker_1"},"local":"127.0.0.1:19010","log_type":"TcpUpstreamConnected","remote":"127.0.0.1:45064","term":null,"ts":"2026-11-22T02:53:13.923Z"}
{"duration_ms":0,"fs_cluster":"pykacluster","fs_fd":"37","fs_init_conn":null,"fs_init_worker":null,"fs_node":"pyka","fs_tenant":"pykatenant","fs_worker":"worker_1","lifecycle":{"close_reason":"idle_ping_timeout","cluster_id":"pykacluster","event":"tunnel_closed","fd":37,"initiator_connection_id":"","initiator_worker_id":"","node_id":"pyka","socket_state":"idle","tenant_id":"pykatenant","worker":"worker_1"},"local":"127.0.0.1:19010","log_type":"TcpConnectionEnd","remote":"127.0.0.1:45064","term":"idle_ping_timeout","ts":"2026-11-22T02:53:13.924Z"}
{"duration_ms":0,"fs_cluster":"downstream-cluster","fs_fd":"36","fs_init_conn":"0","fs_init_worker":"worker_1","fs_node":"downstream-node","fs_tenant":"downstream-tenant","fs_worker":"worker_1","lifecycle":{"close_reason":"explicit_close","cluster_id":"downstream-cluster","event":"tunnel_closed","fd":36,"initiator_connection_id":"0","initiator_worker_id":"worker_1","node_id":"downstream-node","socket_state":"in_use","tenant_id":"downstream-tenant","worker":"worker_1"},"local":"127.0.0.1:19010","log_type":"UpstreamEnd","remote":"127.0.0.1:58760","term":"explicit_close","ts":"2026-11-22T03:03:09.586Z"}
{"duration_ms":7548,"fs_cluster":"ds4-cluster","fs_fd":"30","fs_init_conn":"0","fs_init_worker":"worker_0","fs_node":"ds4-node","fs_tenant":"ds4-tenant","fs_worker":"worker_0","lifecycle":{"close_reason":"http2_ping_timeout","cluster_id":"ds4-cluster","event":"http2_keepalive_timeout","fd":30,"initiator_connection_id":"0","initiator_worker_id":"worker_0","node_id":"ds4-node","socket_state":"in_use","tenant_id":"ds4-tenant","worker":"worker_0"},"local":"127.0.0.1:19050","log_type":"UpstreamEnd","remote":"127.0.0.1:0","term":"http2_ping_timeout","ts":"2026-11-22T03:00:28.292Z"}
{"duration_ms":0,"fs_cluster":"ds4-cluster","fs_fd":"30","fs_init_conn":"0","fs_init_worker":"worker_0","fs_node":"ds4-node","fs_tenant":"ds4-tenant","fs_worker":"worker_0","lifecycle":{"close_reason":"http2_ping_timeout","cluster_id":"ds4-cluster","event":"tunnel_closed","fd":30,"initiator_connection_id":"0","initiator_worker_id":"worker_0","node_id":"ds4-node","socket_state":"in_use","tenant_id":"ds4-tenant","worker":"worker_0"},"local":"127.0.0.1:19050","log_type":"UpstreamEnd","remote":"127.0.0.1:57572","term":"http2_ping_timeout","ts":"2026-11-22T03:00:35.840Z"}
{"duration_ms":0,"fs_cluster":"ds4-cluster","fs_fd":"31","fs_init_conn":"1","fs_init_worker":"worker_0","fs_node":"ds4-node","fs_tenant":"ds4-tenant","fs_worker":"worker_0","lifecycle":{"cluster_id":"ds4-cluster","event":"idle_ping_miss","fd":31,"initiator_connection_id":"1","initiator_worker_id":"worker_0","miss_count":"1","node_id":"ds4-node","socket_state":"idle","tenant_id":"ds4-tenant","worker":"worker_0"},"local":"127.0.0.1:19050","log_type":"TcpUpstreamConnected","remote":"127.0.0.1:57584","term":null,"ts":"2026-11-22T03:00:35.957Z"}
{"duration_ms":0,"fs_cluster":"ds4-cluster","fs_fd":"31","fs_init_conn":"1","fs_init_worker":"worker_0","fs_node":"ds4-node","fs_tenant":"ds4-tenant","fs_worker":"worker_0","lifecycle":{"cluster_id":"ds4-cluster","event":"idle_ping_timeout","fd":31,"initiator_connection_id":"1","initiator_worker_id":"worker_0","miss_count":"3","node_id":"ds4-node","socket_state":"idle","tenant_id":"ds4-tenant","worker":"worker_0"},"local":"127.0.0.1:19050","log_type":"TcpUpstreamConnected","remote":"127.0.0.1:57584","term":null,"ts":"2026-11-22T03:00:42.236Z"}
{"duration_ms":0,"fs_cluster":"ds4-cluster","fs_fd":"31","fs_init_conn":"1","fs_init_worker":"worker_0","fs_node":"ds4-node","fs_tenant":"ds4-tenant","fs_worker":"worker_0","lifecycle":{"close_reason":"idle_ping_timeout","cluster_id":"ds4-cluster","event":"tunnel_closed","fd":31,"initiator_connection_id":"1","initiator_worker_id":"worker_0","node_id":"ds4-node","socket_state":"idle","tenant_id":"ds4-tenant","worker":"worker_0"},"local":"127.0.0.1:19050","log_type":"TcpConnectionEnd","remote":"127.0.0.1:57584","term":"idle_ping_timeout","ts":"2026-11-22T03:00:42.236Z"}
{"duration_ms":0,"fs_cluster":"ds4-cluster","fs_fd":"31","fs_init_conn":"5","fs_init_worker":"worker_0","fs_node":"ds4-node","fs_tenant":"ds4-tenant","fs_worker":"worker_0","lifecycle":{"close_reason":"idle_peer_close","cluster_id":"ds4-cluster","event":"tunnel_closed","fd":31,"initiator_connection_id":"5","initiator_worker_id":"worker_0","node_id":"ds4-node","socket_state":"idle","tenant_id":"ds4-tenant","worker":"worker_0"},"local":"127.0.0.1:19050","log_type":"TcpConnectionEnd","remote":"127.0.0.1:34884","term":"idle_peer_close","ts":"2026-11-22T03:01:01.550Z"}
{"duration_ms":0,"fs_cluster":"ds4-cluster","fs_fd":"30","fs_init_conn":"4","fs_init_worker":"worker_0","fs_node":"ds4-node","fs_tenant":"ds4-tenant","fs_worker":"worker_0","lifecycle":{"close_reason":"remote_close","cluster_id":"ds4-cluster","event":"tunnel_closed","fd":30,"initiator_connection_id":"4","initiator_worker_id":"worker_0","node_id":"ds4-node","socket_state":"in_use","tenant_id":"ds4-tenant","worker":"worker_0"},"local":"127.0.0.1:19050","log_type":"UpstreamEnd","remote":"127.0.0.1:34874","term":"remote_close","ts":"2026-11-22T03:01:01.551Z"}"#;

/// The first sample of `upstream_lifecycle_samples.jsonl` (tunnel_setup).
fn setup_event() -> LifecycleEvent {
    LifecycleEvent {
        event: EventName::TunnelSetup,
        log_type: LogType::TcpUpstreamConnected,
        node_id: "downstream-node".into(),
        cluster_id: "downstream-cluster".into(),
        tenant_id: "downstream-tenant".into(),
        worker: "worker_1".into(),
        socket_state: SocketState::Idle,
        fd: 36,
        initiator_worker_id: "worker_1".into(),
        initiator_connection_id: "0".into(),
        extra: vec![],
        // 2026-11-22T02:52:10.845Z
        start_time_unix_ms: 1_795_315_930_845,
        duration_ms: 0,
        local_address: "127.0.0.1:19010".into(),
        remote_address: "127.0.0.1:58760".into(),
        connection_id: 36,
        termination_details: None,
    }
}

/// The `json_format` the built-in's samples were logged with.
fn up4_format() -> LogFormat {
    let v = json!({
        "ts": "%START_TIME%",
        "log_type": "%ACCESS_LOG_TYPE%",
        "lifecycle": "%DYNAMIC_METADATA(envoy.reverse_tunnel.lifecycle)%",
        "fs_node": "%FILTER_STATE(envoy.reverse_tunnel.node_id:PLAIN)%",
        "fs_cluster": "%FILTER_STATE(envoy.reverse_tunnel.cluster_id:PLAIN)%",
        "fs_tenant": "%FILTER_STATE(envoy.reverse_tunnel.tenant_id:PLAIN)%",
        "fs_worker": "%FILTER_STATE(envoy.reverse_tunnel.worker:PLAIN)%",
        "fs_fd": "%FILTER_STATE(envoy.reverse_tunnel.fd:PLAIN)%",
        "fs_init_worker": "%FILTER_STATE(envoy.reverse_tunnel.initiator_worker_id:PLAIN)%",
        "fs_init_conn": "%FILTER_STATE(envoy.reverse_tunnel.initiator_connection_id:PLAIN)%",
        "term": "%CONNECTION_TERMINATION_DETAILS%",
        "local": "%DOWNSTREAM_LOCAL_ADDRESS%",
        "remote": "%DOWNSTREAM_REMOTE_ADDRESS%",
        "duration_ms": "%DURATION%"
    });
    match v {
        Value::Object(m) => LogFormat::Json(m),
        _ => unreachable!(),
    }
}

fn parse_line(line: &str) -> Value {
    assert!(line.ends_with('\n'));
    assert_eq!(line.matches('\n').count(), 1);
    serde_json::from_str(line.trim_end()).unwrap()
}

#[test]
fn json_matches_first_sample_exactly() {
    let f = Formatter::new(&up4_format()).unwrap();
    let got = parse_line(&f.format(&setup_event()));
    let expected = json!({"duration_ms": 0, "fs_cluster": "downstream-cluster", "fs_fd": "36",
        "fs_init_conn": "0", "fs_init_worker": "worker_1", "fs_node": "downstream-node",
        "fs_tenant": "downstream-tenant", "fs_worker": "worker_1",
        "lifecycle": {"cluster_id": "downstream-cluster", "event": "tunnel_setup", "fd": 36,
            "initiator_connection_id": "0", "initiator_worker_id": "worker_1",
            "node_id": "downstream-node", "socket_state": "idle",
            "tenant_id": "downstream-tenant", "worker": "worker_1"},
        "local": "127.0.0.1:19010", "log_type": "TcpUpstreamConnected",
        "remote": "127.0.0.1:58760", "term": null, "ts": "2026-11-22T02:52:10.845Z"});
    assert_eq!(got, expected);
}

#[test]
fn json_close_without_initiator_ids_matches_sample_shape() {
    // Sample 5: tunnel_closed / idle_peer_close, initiator headers absent.
    let mut ev = setup_event();
    ev.event = EventName::TunnelClosed;
    ev.log_type = LogType::TcpConnectionEnd;
    ev.initiator_worker_id.clear();
    ev.initiator_connection_id.clear();
    ev.extra = vec![(ExtraKey::CloseReason, "idle_peer_close".into())];
    ev.termination_details = Some("idle_peer_close".into());
    let got = parse_line(&Formatter::new(&up4_format()).unwrap().format(&ev));
    assert_eq!(got["fs_init_conn"], Value::Null);
    assert_eq!(got["fs_init_worker"], Value::Null);
    assert_eq!(got["term"], json!("idle_peer_close"));
    assert_eq!(got["log_type"], json!("TcpConnectionEnd"));
    let lc = got["lifecycle"].as_object().unwrap();
    assert_eq!(lc["close_reason"], json!("idle_peer_close"));
    assert_eq!(lc["initiator_connection_id"], json!(""));
    assert_eq!(lc["initiator_worker_id"], json!(""));
    let keys: Vec<&String> = lc.keys().collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert_eq!(keys.len(), 10);
}

#[test]
fn every_sample_line_has_the_same_keys_and_types_as_ours() {
    let samples = SAMPLES;
    let f = Formatter::new(&up4_format()).unwrap();
    let mut checked = 0;
    for line in samples.lines().filter(|l| !l.trim().is_empty()) {
        let s: Value = serde_json::from_str(line).unwrap();
        let lc = s["lifecycle"].as_object().unwrap();
        let mut ev = setup_event();
        let name = lc["event"].as_str().unwrap();
        ev.event = EventName::ALL.into_iter().find(|e| e.as_str() == name).unwrap_or_else(|| panic!("unknown event {name}"));
        ev.initiator_worker_id = lc["initiator_worker_id"].as_str().unwrap().into();
        ev.initiator_connection_id = lc["initiator_connection_id"].as_str().unwrap().into();
        ev.extra.clear();
        for k in ExtraKey::ALL {
            if let Some(v) = lc.get(k.as_str()) {
                ev.extra.push((k, v.as_str().unwrap().to_string()));
            }
        }
        ev.termination_details = s.get("term").and_then(Value::as_str).map(String::from);
        let ours = parse_line(&f.format(&ev));
        let our_lc = ours["lifecycle"].as_object().unwrap();
        let mut theirs_keys: Vec<&String> = lc.keys().collect();
        theirs_keys.sort();
        let our_keys: Vec<&String> = our_lc.keys().collect();
        assert_eq!(our_keys, theirs_keys, "{line}");
        for (k, v) in lc {
            assert_eq!(
                std::mem::discriminant(v),
                std::mem::discriminant(&our_lc[k]),
                "type of {k} in {line}"
            );
        }
        for (k, v) in s.as_object().unwrap() {
            if k == "_source_run" || k == "lifecycle" {
                continue;
            }
            assert!(
                v.is_null() == ours[k].is_null()
                    && v.is_string() == ours[k].is_string()
                    && v.is_number() == ours[k].is_number(),
                "type of {k} in {line}: ours {}",
                ours[k]
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 16);
}

#[test]
fn text_format_renders_struct_as_json_text_and_missing_as_dash() {
    let fmt = LogFormat::Text(
        "%ACCESS_LOG_TYPE% %DYNAMIC_METADATA(envoy.reverse_tunnel.lifecycle:event)% \
         %DYNAMIC_METADATA(envoy.reverse_tunnel.lifecycle:fd)% \
         %DYNAMIC_METADATA(envoy.reverse_tunnel.lifecycle:nope)% \
         %DYNAMIC_METADATA(other.ns)% %CONNECTION_TERMINATION_DETAILS% %CONNECTION_ID% \
         %FILTER_STATE(envoy.reverse_tunnel.fd:PLAIN)% 100%% \
         %DYNAMIC_METADATA(envoy.reverse_tunnel.lifecycle)%"
            .into(),
    );
    let line = Formatter::new(&fmt).unwrap().format(&setup_event());
    let (head, json_text) = line.split_once(" 100% ").unwrap();
    assert_eq!(head, "TcpUpstreamConnected tunnel_setup 36 - - - 36 36");
    let v: Value = serde_json::from_str(json_text.trim_end()).unwrap();
    assert_eq!(v["fd"], json!(36));
    assert!(line.ends_with("}\n"));
}

#[test]
fn text_gets_exactly_one_newline() {
    let ev = setup_event();
    let a = Formatter::new(&LogFormat::Text("%DURATION%".into())).unwrap();
    let b = Formatter::new(&LogFormat::Text("%DURATION%\n".into())).unwrap();
    assert_eq!(a.format(&ev), "0\n");
    assert_eq!(b.format(&ev), "0\n");
}

#[test]
fn default_format_carries_the_event() {
    let mut ev = setup_event();
    ev.termination_details = Some("remote_close".into());
    let line = Formatter::new(&LogFormat::Default).unwrap().format(&ev);
    assert!(
        line.starts_with("[2026-11-22T02:52:10.845Z] TcpUpstreamConnected {"),
        "{line}"
    );
    assert!(
        line.ends_with(" 127.0.0.1:19010 127.0.0.1:58760 0 remote_close\n"),
        "{line}"
    );
    assert!(line.contains("\"event\":\"tunnel_setup\""));
}

#[test]
fn json_mixed_nested_and_constants() {
    let v = json!({
        "mixed": "fd=%FILTER_STATE(envoy.reverse_tunnel.fd)% t=%CONNECTION_TERMINATION_DETAILS%",
        "typed_fd": "%FILTER_STATE(envoy.reverse_tunnel.fd:TYPED)%",
        "key_fd": "%DYNAMIC_METADATA(envoy.reverse_tunnel.lifecycle:fd)%",
        "nested": {"id": "%CONNECTION_ID%", "node": "%FILTER_STATE(envoy.reverse_tunnel.node_id:PLAIN):4%"},
        "k": 7,
        "lit": "plain text",
        "unknown_fs": "%FILTER_STATE(some.other:PLAIN)%"
    });
    let Value::Object(m) = v else { unreachable!() };
    let got = parse_line(
        &Formatter::new(&LogFormat::Json(m))
            .unwrap()
            .format(&setup_event()),
    );
    assert_eq!(got["mixed"], json!("fd=36 t=-"));
    assert_eq!(got["typed_fd"], json!(36));
    assert_eq!(got["key_fd"], json!(36));
    assert_eq!(got["nested"], json!({"id": 36, "node": "down"}));
    assert_eq!(got["k"], json!(7));
    assert_eq!(got["lit"], json!("plain text"));
    assert_eq!(got["unknown_fs"], Value::Null);
}

#[test]
fn unsupported_operators_are_named() {
    for (fmt, needle) in [
        ("%BYTES_SENT%", "%BYTES_SENT%"),
        ("a %REQ(x)% b", "%REQ(x)%"),
        ("%START_TIME(%Q)%", "%Q"),
        ("%FILTER_STATE(envoy.reverse_tunnel.fd:FOO)%", "FOO"),
        ("%DURATION:x%", "bad length"),
        ("50% done", "unterminated"),
        (
            "%DYNAMIC_METADATA(envoy.reverse_tunnel.lifecycle%",
            "unterminated",
        ),
        ("%DURATION)%", "'%DURATION)%'"),
    ] {
        let e = Formatter::new(&LogFormat::Text(fmt.into())).unwrap_err();
        assert!(e.0.contains(needle), "{fmt}: {e}");
    }
    let Value::Object(m) = json!({"a": {"b": "%UPSTREAM_HOST%"}}) else {
        unreachable!()
    };
    let e = Formatter::new(&LogFormat::Json(m)).unwrap_err();
    assert!(e.0.contains("%UPSTREAM_HOST%"), "{e}");
}

#[test]
fn start_time_formats() {
    let ev = setup_event();
    let cases = [
        (
            "%START_TIME(%Y-%m-%dT%H:%M:%S%z)%",
            "2026-11-22T02:52:10+0000",
        ),
        ("%START_TIME(%F %T.%3f)%", "2026-11-22 02:52:10.845"),
        ("%START_TIME(%s)%", "1795315930"),
        (
            "%START_TIME(%6f|%9f|%f|%1f)%",
            "845000|845000000|845000000|8",
        ),
        ("%START_TIME(%E3S %%)%", "10.845 %"),
        ("%START_TIME%", "2026-11-22T02:52:10.845Z"),
    ];
    for (fmt, want) in cases {
        let got = Formatter::new(&LogFormat::Text(fmt.into()))
            .unwrap()
            .format(&ev);
        assert_eq!(got, format!("{want}\n"), "{fmt}");
    }
}

#[test]
fn civil_dates() {
    assert_eq!(default_time(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(default_time(951_782_400_000), "2000-02-29T00:00:00.000Z");
    assert_eq!(default_time(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
    assert_eq!(default_time(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
    assert_eq!(default_time(1_704_067_199_000), "2023-12-31T23:59:59.000Z");
    // Extreme input does not panic.
    let _ = default_time(u64::MAX);
}

#[test]
fn extra_keys_override_and_sort() {
    let mut ev = setup_event();
    ev.extra = vec![
        (ExtraKey::MissCount, "3".into()),
        (ExtraKey::HandoffKind, "pool_to_upstream".into()),
    ];
    let keys: Vec<String> = ev.metadata().keys().cloned().collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert_eq!(ev.metadata()["miss_count"], json!("3"));
    assert_eq!(
        ev.metadata_key("handoff_kind"),
        Some(json!("pool_to_upstream"))
    );
}

#[test]
fn arbitrary_formats_never_panic() {
    let ev = setup_event();
    for s in [
        "%",
        "%%",
        "%(%",
        "%)%",
        "%START_TIME(%E)%",
        "%START_TIME(%",
        "é%DURATION:0%é",
        "%FILTER_STATE()%",
        "%DYNAMIC_METADATA(:)%",
        "%%%",
        "%START_TIME()%",
    ] {
        if let Ok(f) = Formatter::new(&LogFormat::Text(s.into())) {
            let _ = f.format(&ev);
        }
    }
}
