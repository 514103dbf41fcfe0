//! The bootstrap adapter through the recording fake: clock, admin endpoint, reporter callouts, drain and shutdown.

use super::*;

#[test]
fn admin_query_parses_filters_and_refuses_unknown_parameters() {
    let q = AdminQuery::parse("node=n%201&tenant=t&format=text").unwrap();
    assert_eq!(q, AdminQuery { node: Some("n 1".into()), cluster: None, tenant: Some("t".into()), text: true });
    assert_eq!(AdminQuery::parse("").unwrap(), AdminQuery::default());
    assert_eq!(AdminQuery::parse("nod=x").unwrap_err(), AdminQueryError::UnknownParameter("nod".into()));
    assert!(AdminQuery::parse("nod=x").unwrap_err().to_string().contains("'nod'"));
    assert_eq!(AdminQuery::parse("format=xml").unwrap_err(), AdminQueryError::Format("xml".into()));
    let q = AdminQuery::parse("cluster=c%zz%4&node=a+b").unwrap();
    assert_eq!((q.cluster.as_deref(), q.node.as_deref()), (Some("c%zz%4"), Some("a b")), "bad escapes kept as they are");
}

#[test]
fn admin_listing_is_json_even_when_empty() {
    let rt = Runtime::new(BootstrapConfig::default(), crate::ffi::envoy::BootstrapConfigHandle(0), 1).unwrap();
    let listing = admin_listing(&rt, &AdminQuery::default());
    assert!(listing.starts_with("{\"responder\":null,\"draining\":false,\"idle\":0,\"in_use\":0,\"nodes\":0,\"clusters\":0,\"tunnels\":["), "{listing}");
    let v: serde_json::Value = serde_json::from_str(&listing).unwrap();
    assert_eq!(v["tunnels"], serde_json::json!([]));
    assert_eq!(v["idle"], 0);
    let row = AdminRow {
        tunnel: 1,
        worker: WorkerName(3),
        tenant_id: "t\"",
        cluster_id: "c",
        node_id: "n",
        state: "idle",
        age_ms: 5,
        since_last_ping_ack_ms: None,
        last_ping_rtt_ms: 0,
        egress_connections: 0,
        remote_address: "127.0.0.1:1",
        initiator_worker_id: "worker_0",
        initiator_connection_id: "7",
    };
    let v: serde_json::Value = serde_json::from_str(&serde_json::to_string(&row).unwrap()).unwrap();
    assert_eq!((v["worker"].as_str(), v["tenant_id"].as_str()), (Some("worker_3"), Some("t\"")));
    assert!(v["since_last_ping_ack_ms"].is_null());
}

mod through_the_fake {
    use super::*;
    use crate::adapters::fake::{self, BootCall, Env, FakeBootstrap, FakeNetworkFilter};
    use crate::config::reporter::{HTTP_REPORTER_NAME, STRUCT_TYPE_URL};
    use crate::ffi::envoy::CalloutInitError;

    fn ext(env: &Env) -> (BootstrapExtension, FakeBootstrap) {
        let envoy = FakeBootstrap::new();
        (BootstrapExtension::new(Box::new(envoy.clone()), env.rt.clone()), envoy)
    }

    #[test]
    fn server_initialized_arms_the_clock_and_registers_the_admin_paths() {
        let env = Env::new("{}", "{}");
        let (x, envoy) = ext(&env);
        x.server_initialized();
        assert_eq!(
            envoy.calls(),
            vec![
                BootCall::TimerNew(0),
                BootCall::TimerEnable(0, CLOCK_PERIOD_MS),
                BootCall::AdminHandler(ADMIN_PATH.into()),
                BootCall::AdminHandler(REOPEN_PATH.into()),
            ]
        );
    }

    #[test]
    fn each_clock_period_posts_a_tick_and_rearms() {
        let env = Env::new("{}", "{}");
        let (x, envoy) = ext(&env);
        x.server_initialized();
        let f = FakeNetworkFilter::new(300);
        let c = fake::open(&env.handshake, &f);
        assert!(c.ep().is_quiet());
        x.timer_fired();
        assert!(!c.ep().is_quiet(), "a tick was posted to the worker through its connection");
        assert_eq!(envoy.calls().last(), Some(&BootCall::TimerEnable(0, CLOCK_PERIOD_MS)));
        x.timer_fired();
        assert_eq!(c.ep().take().0.len(), 1, "a tick still pending is not posted again");
        assert_eq!(
            envoy.calls().iter().filter(|c| matches!(c, BootCall::TimerEnable(..))).count(),
            3,
            "re-armed every period"
        );
    }

    #[test]
    fn shutdown_stops_the_clock_and_refuses_handshakes() {
        let env = Env::new("{}", "{}");
        let (x, envoy) = ext(&env);
        x.server_initialized();
        x.shutdown();
        assert_eq!(envoy.calls().last(), Some(&BootCall::TimerDelete(0)));
        assert!(env.rt.is_draining());
        x.timer_fired();
        assert_eq!(envoy.calls().last(), Some(&BootCall::TimerDelete(0)), "no timer left to re-arm");
    }

    #[test]
    fn admin_requests_list_reopen_or_refuse() {
        let env = Env::new("{}", "{}");
        let (x, _) = ext(&env);
        let (status, body) = x.admin_request("GET", "/reverse_tunnels?format=text");
        assert_eq!(status, 200);
        assert!(String::from_utf8(body).unwrap().starts_with("tunnels: 0 idle"));
        assert_eq!(x.admin_request("GET", "/reverse_tunnels?x=1").0, 400);
        assert_eq!(x.admin_request("GET", "/elsewhere").0, 404);
        assert_eq!(x.admin_request("POST", REOPEN_PATH).0, 200);
    }

    #[test]
    fn the_reporter_sends_through_the_callout_and_counts_a_refused_start() {
        let boot = format!(
            r#"{{"reporter_config": {{"name": "{HTTP_REPORTER_NAME}", "typed_config": {{"@type": "{STRUCT_TYPE_URL}", "value": {{"cluster": "cp", "path": "/events"}}}}}}}}"#
        );
        let env = Env::new(&boot, "{}");
        let (x, envoy) = ext(&env);
        x.server_initialized();
        x.timer_fired();
        let sent: Vec<_> = envoy.calls().into_iter().filter(|c| matches!(c, BootCall::Callout(..))).collect();
        assert_eq!(sent.len(), 1, "first payload: a snapshot");
        let BootCall::Callout(cluster, path, body) = &sent[0] else { unreachable!() };
        assert_eq!((cluster.as_str(), path.as_str()), ("cp", "/events"));
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["kind"], "snapshot");
        x.http_callout_done(1, CalloutResult::Success, Some("200"), b"");
        assert_eq!(env.rt.reporter.as_ref().unwrap().counters().sent, 1);

        let env = Env::new(&boot, "{}");
        let (x, envoy) = ext(&env);
        envoy.callout.set(Err(CalloutInitError::ClusterNotFound));
        x.timer_fired();
        assert_eq!(env.rt.reporter.as_ref().unwrap().counters().failed, 1);
    }
}

#[test]
fn admin_listing_names_the_responder_and_its_drain() {
    let cfg = BootstrapConfig::decode(br#"{"responder": "responder-\"b\""}"#).unwrap();
    let rt = Runtime::new(cfg, crate::ffi::envoy::BootstrapConfigHandle(0), 1).unwrap();
    let v: serde_json::Value = serde_json::from_str(&admin_listing(&rt, &AdminQuery::default())).unwrap();
    assert_eq!((v["responder"].as_str(), v["draining"].as_bool()), (Some("responder-\"b\""), Some(false)));
    let text = admin_listing(&rt, &AdminQuery { text: true, ..Default::default() });
    assert_eq!(text, "tunnels: 0 idle, 0 in use, 0 nodes, 0 clusters; responder responder-\"b\"\n");
    drain_idle_tunnels(&rt);
    let v: serde_json::Value = serde_json::from_str(&admin_listing(&rt, &AdminQuery::default())).unwrap();
    assert_eq!(v["draining"], true);
    assert!(admin_listing(&rt, &AdminQuery { text: true, ..Default::default() }).ends_with("; draining\n"));
}
