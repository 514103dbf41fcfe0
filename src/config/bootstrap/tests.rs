//! Tests of the bootstrap config decoding and validation.

use super::*;
use crate::proto::accesslog::AccessLogFilter;
use crate::proto::extension::TypedExtensionConfig;
use protobuf::well_known_types::struct_::{value::Kind, Struct, Value};
use protobuf::well_known_types::wrappers::{BoolValue, UInt32Value};
use protobuf::{Message, MessageField};

fn decode_ok(bytes: &[u8]) -> BootstrapConfig {
    match BootstrapConfig::decode(bytes) {
        Ok(c) => c,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn decode_err(bytes: &[u8]) -> String {
    match BootstrapConfig::decode(bytes) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

fn any_of<M: protobuf::MessageFull>(msg: &M) -> Any {
    let mut any = Any::new();
    any.type_url = format!("type.googleapis.com/{}", M::descriptor().full_name());
    any.value = msg.write_to_bytes().unwrap_or_default();
    any
}

fn with_log(log: AccessLog) -> Vec<u8> {
    let mut msg = UpstreamReverseConnectionSocketInterface::new();
    msg.access_log.push(log);
    msg.write_to_bytes().unwrap_or_default()
}

fn log_of(any: Any) -> AccessLog {
    let mut log = AccessLog::new();
    log.name = "envoy.access_loggers.file".into();
    log.config_type = Some(access_log::Config_type::TypedConfig(any));
    log
}

fn sfs_text(text: &str) -> SubstitutionFormatString {
    let mut sfs = SubstitutionFormatString::new();
    sfs.format = Some(substitution_format_string::Format::TextFormat(text.into()));
    sfs
}

fn string_value(s: &str) -> Value {
    let mut v = Value::new();
    v.kind = Some(Kind::StringValue(s.into()));
    v
}

#[test]
fn config_bootstrap_empty_bytes_give_defaults() {
    let c = decode_ok(b"");
    assert_eq!(c, BootstrapConfig::default());
    assert_eq!(c.stat_prefix, "reverse_tunnel_acceptor");
    assert_eq!(c.ping_failure_threshold, 3);
    assert!(!c.enable_tenant_isolation);
    assert_eq!(c.max_connections_per_node, 0);
    assert_eq!(decode_ok(b" {} "), BootstrapConfig::default());
}

#[test]
fn config_bootstrap_protobuf_round_trip() {
    let mut msg = UpstreamReverseConnectionSocketInterface::new();
    msg.stat_prefix = "upstream_rc".into();
    msg.ping_failure_threshold = MessageField::some(UInt32Value {
        value: 5,
        ..Default::default()
    });
    msg.enable_detailed_stats = true;
    msg.enable_tenant_isolation = MessageField::some(BoolValue {
        value: true,
        ..Default::default()
    });
    msg.max_connections_per_node = 4;
    let c = decode_ok(&msg.write_to_bytes().unwrap_or_default());
    assert_eq!(c.stat_prefix, "upstream_rc");
    assert_eq!(c.ping_failure_threshold, 5);
    assert!(c.enable_detailed_stats);
    assert!(c.enable_tenant_isolation);
    assert_eq!(c.max_connections_per_node, 4);
    assert!(c.reporter.is_none());
    assert!(c.access_log.is_empty());
}

#[test]
fn config_bootstrap_hand_checked_bytes_prove_field_numbers() {
    // Hand-assembled wire bytes (tag = field << 3 | wire type):
    //   0x0a = field 1 (stat_prefix), LEN: 3 bytes "abc"
    //   0x12 = field 2 (ping_failure_threshold, UInt32Value), LEN 2: { 0x08 = value, varint 7 }
    //   0x18 = field 3 (enable_detailed_stats), varint 1
    //   0x2a = field 5 (enable_tenant_isolation, BoolValue), LEN 2: { 0x08, 1 }
    //   0x38 = field 7 (max_connections_per_node), varint 300 = 0xac 0x02
    //   0xa0 0x06 = field 100 (unknown), varint 1: must be ignored
    let bytes = [
        0x0a, 0x03, b'a', b'b', b'c', 0x12, 0x02, 0x08, 0x07, 0x18, 0x01, 0x2a, 0x02, 0x08,
        0x01, 0x38, 0xac, 0x02, 0xa0, 0x06, 0x01,
    ];
    let c = decode_ok(&bytes);
    assert_eq!(c.stat_prefix, "abc");
    assert_eq!(c.ping_failure_threshold, 7);
    assert!(c.enable_detailed_stats);
    assert!(c.enable_tenant_isolation);
    assert_eq!(c.max_connections_per_node, 300);
}

#[test]
fn config_bootstrap_stat_prefix_of_123_bytes_is_not_mistaken_for_json() {
    // Field 1 with length 123 serializes as "\n{": looks like JSON, but is protobuf.
    let mut msg = UpstreamReverseConnectionSocketInterface::new();
    msg.stat_prefix = "p".repeat(123);
    let bytes = msg.write_to_bytes().unwrap_or_default();
    assert_eq!(&bytes[..2], b"\n{");
    assert_eq!(decode_ok(&bytes).stat_prefix, "p".repeat(123));
}

#[test]
fn config_bootstrap_zero_ping_failure_threshold_is_refused() {
    let mut msg = UpstreamReverseConnectionSocketInterface::new();
    msg.ping_failure_threshold = MessageField::some(UInt32Value::new());
    let e = decode_err(&msg.write_to_bytes().unwrap_or_default());
    assert_eq!(e, "ping_failure_threshold: must be >= 1, got 0");
    let e = decode_err(br#"{"ping_failure_threshold": 0}"#);
    assert_eq!(e, "ping_failure_threshold: must be >= 1, got 0");
}

#[test]
fn config_bootstrap_json_forms() {
    let c = decode_ok(
        br#"{"stat_prefix": "up", "pingFailureThreshold": 4.0, "enable_detailed_stats": true,
             "enableTenantIsolation": true, "max_connections_per_node": 2.0}"#,
    );
    assert_eq!(c.stat_prefix, "up");
    assert_eq!(c.ping_failure_threshold, 4);
    assert!(c.enable_detailed_stats);
    assert!(c.enable_tenant_isolation);
    assert_eq!(c.max_connections_per_node, 2);
    assert_eq!(
        decode_ok(br#"{"ping_failure_threshold": 3.0}"#).ping_failure_threshold,
        3
    );
    assert_eq!(
        decode_ok(br#"{"ping_failure_threshold": "6"}"#).ping_failure_threshold,
        6
    );
    assert_eq!(
        decode_ok(br#"{"stat_prefix": null}"#).stat_prefix,
        "reverse_tunnel_acceptor"
    );
}

#[test]
fn config_bootstrap_json_errors_name_the_field() {
    assert_eq!(decode_err(br#"{"foo": 1}"#), "foo: unknown field 'foo'");
    let e = decode_err(br#"{"ping_failure_threshold": 2.5}"#);
    assert!(
        e.starts_with("ping_failure_threshold: expected an integer"),
        "{e}"
    );
    let e = decode_err(br#"{"ping_failure_threshold": -1}"#);
    assert!(
        e.starts_with("ping_failure_threshold: invalid value"),
        "{e}"
    );
    let e = decode_err(br#"{"stat_prefix": 7}"#);
    assert!(e.starts_with("stat_prefix: invalid value"), "{e}");
    let e = decode_err(br#"{"stat_prefix": "a", "statPrefix": "b"}"#);
    assert!(e.starts_with("stat_prefix: field given twice"), "{e}");
    let e = decode_err(br#"{"access_log": [{"name": "x", "bogus": 1}]}"#);
    assert_eq!(e, "access_log[0].bogus: unknown field 'bogus'");
    let e = decode_err(br#"{"access_log": {"name": "x"}}"#);
    assert!(e.starts_with("access_log: expected a JSON array"), "{e}");
    let e = decode_err(b"{not json");
    assert!(e.starts_with("config: invalid JSON"), "{e}");
    let e = decode_err(b"[1]");
    assert!(e.starts_with("config: "), "{e}");
}

#[test]
fn config_bootstrap_garbage_bytes_are_an_error_not_a_panic() {
    for bytes in [
        &[0xffu8, 0xff, 0xff][..],
        &[0x0a, 0x10, b'a'],
        &[0x12, 0x05, 0x08],
    ] {
        let e = decode_err(bytes);
        assert!(e.starts_with("config: not a valid serialized"), "{e}");
    }
}

#[test]
fn config_bootstrap_unknown_reporter_is_refused() {
    let mut msg = UpstreamReverseConnectionSocketInterface::new();
    let mut reporter = TypedExtensionConfig::new();
    reporter.name = "my.reporter".into();
    msg.reporter_config = MessageField::some(reporter);
    let e = decode_err(&msg.write_to_bytes().unwrap_or_default());
    assert_eq!(
        e,
        "reporter_config: unknown reporter 'my.reporter' (known: envoy.extensions.reverse_tunnel.reporting_service.http)"
    );
    let e = decode_err(
        br#"{"reporter_config": {"name": "r2", "typed_config": {"@type": "type.googleapis.com/x.Y", "a": 1}}}"#,
    );
    assert!(e.starts_with("reporter_config: unknown reporter 'r2' "), "{e}");
}

#[test]
fn config_bootstrap_http_reporter_from_protobuf_and_json() {
    use crate::config::reporter::{HTTP_REPORTER_NAME, STRUCT_TYPE_URL};
    let mut fields = Struct::new();
    fields.fields.insert("cluster".into(), string_value("cp"));
    fields.fields.insert("send_interval".into(), string_value("200ms"));
    let mut any = Any::new();
    any.type_url = STRUCT_TYPE_URL.into();
    any.value = fields.write_to_bytes().unwrap_or_default();
    let mut reporter = TypedExtensionConfig::new();
    reporter.name = HTTP_REPORTER_NAME.into();
    reporter.typed_config = MessageField::some(any);
    let mut msg = UpstreamReverseConnectionSocketInterface::new();
    msg.reporter_config = MessageField::some(reporter);
    let c = decode_ok(&msg.write_to_bytes().unwrap_or_default());
    let r = c.reporter.expect("reporter");
    assert_eq!((r.cluster.as_str(), r.settings.send_interval_ms), ("cp", 200));

    let json = format!(
        r#"{{"reporter_config": {{"name": "{HTTP_REPORTER_NAME}", "typed_config": {{"@type": "{STRUCT_TYPE_URL}", "value": {{"cluster": "cp2", "max_batch": 7}}}}}}}}"#
    );
    let r = decode_ok(json.as_bytes()).reporter.expect("reporter");
    assert_eq!((r.cluster.as_str(), r.settings.max_batch), ("cp2", 7));
    let json = format!(
        r#"{{"reporter_config": {{"name": "{HTTP_REPORTER_NAME}", "typed_config": {{"@type": "{STRUCT_TYPE_URL}", "value": {{"cluster": "cp", "max_batch": "x"}}}}}}}}"#
    );
    assert!(decode_err(json.as_bytes()).starts_with("reporter_config.typed_config.max_batch: "));
}

#[test]
fn config_bootstrap_file_access_log_variants() {
    // No format.
    let mut file = FileAccessLog::new();
    file.path = "rt.log".into();
    let c = decode_ok(&with_log(log_of(any_of(&file))));
    assert_eq!(c.access_log.len(), 1);
    assert_eq!(c.access_log[0].name, "envoy.access_loggers.file");
    assert_eq!(
        c.access_log[0].sink,
        AccessLogSink::File {
            path: "rt.log".into()
        }
    );
    assert_eq!(c.access_log[0].format, LogFormat::Default);
    assert!(!c.access_log[0].has_filter);

    // Deprecated `format` string.
    file.access_log_format = Some(file_access_log::Access_log_format::Format(
        "%START_TIME%\n".into(),
    ));
    let c = decode_ok(&with_log(log_of(any_of(&file))));
    assert_eq!(
        c.access_log[0].format,
        LogFormat::Text("%START_TIME%\n".into())
    );

    // json_format and typed_json_format.
    let mut s = Struct::new();
    s.fields.insert(
        "event".into(),
        string_value("%DYNAMIC_METADATA(envoy.reverse_tunnel.lifecycle:event)%"),
    );
    let expected = LogFormat::Json(
        serde_json::json!({"event": "%DYNAMIC_METADATA(envoy.reverse_tunnel.lifecycle:event)%"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    file.access_log_format = Some(file_access_log::Access_log_format::JsonFormat(s.clone()));
    assert_eq!(
        decode_ok(&with_log(log_of(any_of(&file)))).access_log[0].format,
        expected
    );
    file.access_log_format = Some(file_access_log::Access_log_format::TypedJsonFormat(
        s.clone(),
    ));
    assert_eq!(
        decode_ok(&with_log(log_of(any_of(&file)))).access_log[0].format,
        expected
    );

    // log_format: text_format, json_format, text_format_source.
    file.access_log_format = Some(file_access_log::Access_log_format::LogFormat(sfs_text(
        "T %REQ(x)%",
    )));
    assert_eq!(
        decode_ok(&with_log(log_of(any_of(&file)))).access_log[0].format,
        LogFormat::Text("T %REQ(x)%".into())
    );
    let mut sfs = SubstitutionFormatString::new();
    sfs.format = Some(substitution_format_string::Format::JsonFormat(s));
    file.access_log_format = Some(file_access_log::Access_log_format::LogFormat(sfs));
    assert_eq!(
        decode_ok(&with_log(log_of(any_of(&file)))).access_log[0].format,
        expected
    );
    let mut source = DataSource::new();
    source.specifier = Some(data_source::Specifier::InlineString("INLINE\n".into()));
    let mut sfs = SubstitutionFormatString::new();
    sfs.format = Some(substitution_format_string::Format::TextFormatSource(source));
    file.access_log_format = Some(file_access_log::Access_log_format::LogFormat(sfs));
    assert_eq!(
        decode_ok(&with_log(log_of(any_of(&file)))).access_log[0].format,
        LogFormat::Text("INLINE\n".into())
    );
}

#[test]
fn config_bootstrap_file_access_log_errors() {
    let file = FileAccessLog::new();
    assert_eq!(
        decode_err(&with_log(log_of(any_of(&file)))),
        "access_log[0].typed_config.path: must not be empty"
    );

    let mut file = FileAccessLog::new();
    file.path = "/dev/stdout".into();
    let mut source = DataSource::new();
    source.specifier = Some(data_source::Specifier::Filename("fmt.txt".into()));
    let mut sfs = SubstitutionFormatString::new();
    sfs.format = Some(substitution_format_string::Format::TextFormatSource(source));
    file.access_log_format = Some(file_access_log::Access_log_format::LogFormat(sfs));
    let e = decode_err(&with_log(log_of(any_of(&file))));
    assert!(
        e.starts_with("access_log[0].typed_config.log_format.text_format_source.filename: "),
        "{e}"
    );

    let mut source = DataSource::new();
    source.specifier = Some(data_source::Specifier::EnvironmentVariable("FMT".into()));
    let mut sfs = SubstitutionFormatString::new();
    sfs.format = Some(substitution_format_string::Format::TextFormatSource(source));
    file.access_log_format = Some(file_access_log::Access_log_format::LogFormat(sfs));
    let e = decode_err(&with_log(log_of(any_of(&file))));
    assert!(
        e.starts_with(
            "access_log[0].typed_config.log_format.text_format_source.environment_variable: "
        ),
        "{e}"
    );

    file.access_log_format = Some(file_access_log::Access_log_format::LogFormat(
        SubstitutionFormatString::new(),
    ));
    let e = decode_err(&with_log(log_of(any_of(&file))));
    assert!(
        e.starts_with("access_log[0].typed_config.log_format: one of"),
        "{e}"
    );

    let mut sfs = sfs_text("x");
    sfs.formatters.push(TypedExtensionConfig::new());
    file.access_log_format = Some(file_access_log::Access_log_format::LogFormat(sfs));
    let e = decode_err(&with_log(log_of(any_of(&file))));
    assert!(
        e.starts_with("access_log[0].typed_config.log_format.formatters: "),
        "{e}"
    );

    // Corrupt Any value.
    let mut any = any_of(&FileAccessLog::new());
    any.value = vec![0x0a, 0x50];
    let e = decode_err(&with_log(log_of(any)));
    assert!(
        e.starts_with("access_log[0].typed_config: cannot decode value"),
        "{e}"
    );
}

#[test]
fn config_bootstrap_stream_access_logs() {
    let mut out = StdoutAccessLog::new();
    let c = decode_ok(&with_log(log_of(any_of(&out))));
    assert_eq!(c.access_log[0].sink, AccessLogSink::Stdout);
    assert_eq!(c.access_log[0].format, LogFormat::Default);
    out.access_log_format = Some(stdout_access_log::Access_log_format::LogFormat(sfs_text(
        "O\n",
    )));
    assert_eq!(
        decode_ok(&with_log(log_of(any_of(&out)))).access_log[0].format,
        LogFormat::Text("O\n".into())
    );

    let mut err = StderrAccessLog::new();
    err.access_log_format = Some(stderr_access_log::Access_log_format::LogFormat(sfs_text(
        "E\n",
    )));
    let c = decode_ok(&with_log(log_of(any_of(&err))));
    assert_eq!(c.access_log[0].sink, AccessLogSink::Stderr);
    assert_eq!(c.access_log[0].format, LogFormat::Text("E\n".into()));
}

#[test]
fn config_bootstrap_access_log_type_and_filter_errors() {
    let mut any = Any::new();
    any.type_url =
        "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig"
            .into();
    let mut msg = UpstreamReverseConnectionSocketInterface::new();
    msg.access_log.push(log_of(any_of(&StdoutAccessLog::new())));
    msg.access_log.push(log_of(any));
    let e = decode_err(&msg.write_to_bytes().unwrap_or_default());
    assert!(
        e.starts_with(
            "access_log[1].typed_config: unsupported access logger type \
             'type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig'"
        ),
        "{e}"
    );

    assert!(decode_err(&with_log(AccessLog::new()))
        .starts_with("access_log[0].typed_config: missing"));

    let mut log = log_of(any_of(&StdoutAccessLog::new()));
    log.filter = MessageField::some(AccessLogFilter::new());
    assert_eq!(
        decode_err(&with_log(log)),
        "access_log[0].filter: access log filters are not supported"
    );
    // A real filter's fields are unknown to our empty AccessLogFilter: still detected.
    let e = decode_err(
        br#"{"access_log": [{"filter": {"status_code_filter": {"comparison": {"op": "GE"}}},
             "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"}}]}"#,
    );
    assert_eq!(
        e,
        "access_log[0].filter: access log filters are not supported"
    );
}

#[test]
fn config_bootstrap_json_access_logs_resolve_any() {
    let c = decode_ok(
        br#"{"access_log": [
             {"name": "f", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
               "path": "logs/x.log", "log_format": {"json_format": {"event": "%A%", "n": 1.0, "nested": {"k": "v"}}}}},
             {"name": "o", "typedConfig": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
               "logFormat": {"textFormatSource": {"inlineString": "L %B%\n"}}}},
             {"typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog"}}
           ]}"#,
    );
    assert_eq!(c.access_log.len(), 3);
    assert_eq!(
        c.access_log[0].sink,
        AccessLogSink::File {
            path: "logs/x.log".into()
        }
    );
    match &c.access_log[0].format {
        LogFormat::Json(map) => {
            assert_eq!(
                serde_json::Value::Object(map.clone()).to_string(),
                r#"{"event":"%A%","n":1,"nested":{"k":"v"}}"#
            )
        }
        other => panic!("expected JSON format, got {other:?}"),
    }
    assert_eq!(c.access_log[1].sink, AccessLogSink::Stdout);
    assert_eq!(c.access_log[1].format, LogFormat::Text("L %B%\n".into()));
    assert_eq!(c.access_log[2].sink, AccessLogSink::Stderr);

    let e = decode_err(
        br#"{"access_log": [{"typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
             "path": "/x", "pth": 1}}]}"#,
    );
    assert_eq!(e, "access_log[0].typed_config.pth: unknown field 'pth'");
    let e = decode_err(
        br#"{"access_log": [{"typed_config": {"@type": "type.googleapis.com/foo.Bar"}}]}"#,
    );
    assert!(e.starts_with("access_log[0].typed_config: unsupported access logger type 'type.googleapis.com/foo.Bar'"), "{e}");
    let e = decode_err(br#"{"access_log": [{"typed_config": {"path": "/x"}}]}"#);
    assert!(
        e.starts_with("access_log[0].typed_config: a google.protobuf.Any needs"),
        "{e}"
    );
    let e = decode_err(
        br#"{"access_log": [{"typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
             "path": "/x", "format": "a", "log_format": {"text_format": "b"}}}]}"#,
    );
    assert!(
        e.starts_with("access_log[0].typed_config.log_format: conflicts with 'format'"),
        "{e}"
    );
}

#[test]
fn config_bootstrap_responder_name_struct_form_and_reporter() {
    use crate::config::reporter::{HTTP_REPORTER_NAME, STRUCT_TYPE_URL};
    // Struct form: our `responder` is taken out, the rest is the built-in's message.
    let c = decode_ok(br#"{"stat_prefix": "upstream_rc", "responder": "responder-a"}"#);
    assert_eq!((c.responder.as_deref(), c.responder_name()), (Some("responder-a"), Some("responder-a")));
    assert_eq!(c.stat_prefix, "upstream_rc");
    assert_eq!(decode_ok(br#"{"responder": "r"}"#).stat_prefix, DEFAULT_STAT_PREFIX);
    // Absent: no name, unless a reporter gives one.
    let c = decode_ok(br#"{"stat_prefix": "p"}"#);
    assert_eq!((c.responder.as_deref(), c.responder_name()), (None, None));
    assert_eq!(decode_ok(b"").responder_name(), None);
    let reporter = |extra: &str| {
        format!(
            r#""reporter_config": {{"name": "{HTTP_REPORTER_NAME}", "typed_config": {{"@type": "{STRUCT_TYPE_URL}", "value": {{"cluster": "cp"{extra}}}}}}}"#
        )
    };
    let c = decode_ok(format!("{{{}}}", reporter(r#", "responder": "rep-1""#)).as_bytes());
    assert_eq!(c.responder_name(), Some("rep-1"));
    let c = decode_ok(format!("{{{}}}", reporter("")).as_bytes());
    assert_eq!(c.responder_name(), Some(DEFAULT_RESPONDER));
    // Both: the listing shows ours; the reporter keeps its own name, or takes ours if it has none.
    let c = decode_ok(format!(r#"{{"responder": "fleet-b", {}}}"#, reporter("")).as_bytes());
    assert_eq!((c.responder_name(), c.reporter.as_ref().map(|r| r.responder.as_str())), (Some("fleet-b"), Some("fleet-b")));
    let c = decode_ok(format!(r#"{{"responder": "fleet-b", {}}}"#, reporter(r#", "responder": "rep-1""#)).as_bytes());
    assert_eq!((c.responder_name(), c.reporter.as_ref().map(|r| r.responder.as_str())), (Some("fleet-b"), Some("rep-1")));
    // Bad names are refused, naming the field; other fields are still checked.
    let long = format!(r#"{{"responder": "{}"}}"#, "x".repeat(MAX_RESPONDER_LEN + 1));
    for bad in [&br#"{"responder": 5}"#[..], br#"{"responder": ""}"#, br#"{"responder": "a\u0001b"}"#, long.as_bytes()] {
        let e = decode_err(bad);
        assert!(e.starts_with("responder: "), "{e}");
    }
    let e = decode_err(br#"{"responder": "ok", "ping_failure_threshold": 0}"#);
    assert!(e.starts_with("ping_failure_threshold: "), "{e}");
    let e = decode_err(br#"{"responder": "ok", "respondr": "x"}"#);
    assert!(e.contains("respondr"), "{e}");
}
