//! Config of the bootstrap extension: the built-in's message
//! `envoy.extensions.bootstrap.reverse_tunnel.upstream_socket_interface.v3.UpstreamReverseConnectionSocketInterface`
//! (fields 1–7, shared reference `envoy-1.40-protos.txt`), given as serialized protobuf or as JSON
//! from a `google.protobuf.Struct` (see [`crate::config`]).

use protobuf::well_known_types::any::Any;

use super::reporter::{HttpReporterConfig, DEFAULT_RESPONDER};
use super::{decode_message, join_path, struct_to_json, ConfigError};
use crate::proto::accesslog::{access_log, AccessLog};
use crate::proto::base::{data_source, DataSource};
use crate::proto::file::{file_access_log, FileAccessLog};
use crate::proto::stream::{
    stderr_access_log, stdout_access_log, StderrAccessLog, StdoutAccessLog,
};
use crate::proto::substitution_format_string::{
    substitution_format_string, SubstitutionFormatString,
};
use crate::proto::upstream_reverse_connection_socket_interface::UpstreamReverseConnectionSocketInterface;

/// Default stat prefix when `stat_prefix` is unset or empty (docs/protocol.md#socket-interface-stats).
pub const DEFAULT_STAT_PREFIX: &str = "reverse_tunnel_acceptor";

/// Default number of missed RPING echoes before an idle tunnel is closed (docs/protocol.md#rping-keepalive:
/// default 3, min 1).
pub const DEFAULT_PING_FAILURE_THRESHOLD: u32 = 3;

/// Type URL of the file access logger's config.
pub const FILE_ACCESS_LOG_TYPE: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog";
/// Type URL of the stdout access logger's config.
pub const STDOUT_ACCESS_LOG_TYPE: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
/// Type URL of the stderr access logger's config.
pub const STDERR_ACCESS_LOG_TYPE: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog";

/// Validated bootstrap config (message `UpstreamReverseConnectionSocketInterface`).
#[derive(Debug, Clone, PartialEq)]
pub struct BootstrapConfig {
    /// Field 1. Prefix of every stat of the bootstrap extension; default
    /// [`DEFAULT_STAT_PREFIX`] (`reverse_tunnel_acceptor`, docs/protocol.md#socket-interface-stats).
    pub stat_prefix: String,
    /// Field 2 (`UInt32Value`). Missed RPING echoes after which an idle tunnel is closed; default
    /// 3, always >= 1 (docs/protocol.md#rping-keepalive).
    pub ping_failure_threshold: u32,
    /// Field 3. Emit the per-node / per-cluster gauges (docs/protocol.md#socket-interface-stats).
    pub enable_detailed_stats: bool,
    /// Field 4 (`TypedExtensionConfig`, docs/protocol.md#reporter). Our HTTP reporter
    /// ([`HTTP_REPORTER_NAME`](crate::config::reporter::HTTP_REPORTER_NAME)) when configured;
    /// any other reporter name is refused.
    pub reporter: Option<HttpReporterConfig>,
    /// Field 5 (`BoolValue`, default false). Scope node and cluster ids by tenant id
    /// (`tenant:node`, docs/protocol.md#keys).
    pub enable_tenant_isolation: bool,
    /// Field 6. Tunnel lifecycle access logs (docs/protocol.md#lifecycle-log), in config order.
    pub access_log: Vec<AccessLogConfig>,
    /// Field 7. Maximum tunnels per node, enforced by handshake filters with
    /// `enable_connection_limit`; 0 = unlimited (docs/protocol.md#keys).
    pub max_connections_per_node: u32,
    /// Ours, not a field of the built-in's message: this responder's name in a fleet
    /// (`responder`, only in the `google.protobuf.Struct` form). Shown by the admin listing and,
    /// unless the reporter names one itself, put in the reporter's payloads.
    pub responder: Option<String>,
}

impl Default for BootstrapConfig {
    fn default() -> BootstrapConfig {
        BootstrapConfig {
            stat_prefix: DEFAULT_STAT_PREFIX.to_string(),
            ping_failure_threshold: DEFAULT_PING_FAILURE_THRESHOLD,
            enable_detailed_stats: false,
            reporter: None,
            enable_tenant_isolation: false,
            access_log: Vec::new(),
            max_connections_per_node: 0,
            responder: None,
        }
    }
}

/// One access logger of `access_log` (`envoy.config.accesslog.v3.AccessLog`).
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogConfig {
    /// The logger's `name` (e.g. `envoy.access_loggers.file`); informational.
    pub name: String,
    /// Where lines go.
    pub sink: AccessLogSink,
    /// How a line is formatted.
    pub format: LogFormat,
    /// Whether a `filter` was configured. Always false in a decoded config: filters are refused.
    pub has_filter: bool,
}

/// Destination of an access logger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogSink {
    /// `FileAccessLog.path` (non-empty). Envoy's own file loggers accept `/dev/stdout` too.
    File {
        /// File path, as configured.
        path: String,
    },
    /// `StdoutAccessLog`.
    Stdout,
    /// `StderrAccessLog`.
    Stderr,
}

pub use crate::core::accesslog::LogFormat;

impl BootstrapConfig {
    /// Decodes and validates the bootstrap extension's config bytes: serialized
    /// `UpstreamReverseConnectionSocketInterface`, JSON text (from a `google.protobuf.Struct`), or
    /// empty (all defaults).
    ///
    /// Errors, each starting with the field path:
    /// - `ping_failure_threshold: must be >= 1, got 0`;
    /// - `reporter_config: unknown reporter '<name>' (known: ...)`, and
    ///   `reporter_config.typed_config[.<field>]: ...` (see [`HttpReporterConfig::from_proto`]);
    /// - `access_log[i].typed_config: ...` for a missing or unsupported logger type, and the
    ///   logger's own field errors below it (e.g. `access_log[0].typed_config.path: must not be empty`);
    /// - `access_log[i].filter: access log filters are not supported`;
    /// - JSON: `<path>: unknown field '<name>'`, `<path>: invalid value: ...`.
    ///
    /// The JSON form may also carry our own `responder` (a name: 1 to 128 printable characters);
    /// it is taken out before the rest is decoded as the built-in's message, so the message
    /// itself stays unchanged.
    pub fn decode(bytes: &[u8]) -> Result<BootstrapConfig, ConfigError> {
        let (responder, rest) = take_responder(bytes)?;
        let msg: UpstreamReverseConnectionSocketInterface = decode_message(rest.as_deref().unwrap_or(bytes))?;
        let mut cfg = BootstrapConfig::from_proto(&msg)?;
        if let Some(name) = &responder {
            if let Some(r) = cfg.reporter.as_mut().filter(|r| r.responder == DEFAULT_RESPONDER) {
                r.responder = name.clone();
            }
        }
        cfg.responder = responder;
        Ok(cfg)
    }

    /// This responder's name for the admin listing: `responder`, else the reporter's
    /// `responder` when a reporter is configured, else none.
    pub fn responder_name(&self) -> Option<&str> {
        self.responder.as_deref().or(self.reporter.as_ref().map(|r| r.responder.as_str()))
    }

    /// Validates an already decoded message (see [`BootstrapConfig::decode`] for the errors).
    pub fn from_proto(
        msg: &UpstreamReverseConnectionSocketInterface,
    ) -> Result<BootstrapConfig, ConfigError> {
        let stat_prefix = if msg.stat_prefix.is_empty() {
            DEFAULT_STAT_PREFIX.to_string()
        } else {
            msg.stat_prefix.clone()
        };
        let ping_failure_threshold = msg
            .ping_failure_threshold
            .as_ref()
            .map_or(DEFAULT_PING_FAILURE_THRESHOLD, |w| w.value);
        if ping_failure_threshold < 1 {
            return Err(ConfigError::new(
                "ping_failure_threshold",
                format!("must be >= 1, got {ping_failure_threshold}"),
            ));
        }
        let reporter = msg
            .reporter_config
            .as_ref()
            .map(HttpReporterConfig::from_proto)
            .transpose()?;
        let access_log = msg
            .access_log
            .iter()
            .enumerate()
            .map(|(i, log)| access_log_from_proto(log, &format!("access_log[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BootstrapConfig {
            stat_prefix,
            ping_failure_threshold,
            enable_detailed_stats: msg.enable_detailed_stats,
            reporter,
            enable_tenant_isolation: msg
                .enable_tenant_isolation
                .as_ref()
                .is_some_and(|w| w.value),
            access_log,
            max_connections_per_node: msg.max_connections_per_node,
            responder: None,
        })
    }
}

/// Longest accepted `responder` name.
pub const MAX_RESPONDER_LEN: usize = 128;

/// JSON config bytes: takes our own `responder` field out of the object. Returns the validated
/// name (if present) and the re-serialized rest (if the field was there); other bytes are left
/// alone (`(None, None)`).
fn take_responder(bytes: &[u8]) -> Result<(Option<String>, Option<Vec<u8>>), ConfigError> {
    if !super::looks_like_json(bytes) {
        return Ok((None, None));
    }
    let Ok(serde_json::Value::Object(mut obj)) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        // Not an object: decode_message reports it.
        return Ok((None, None));
    };
    let Some(v) = obj.remove("responder") else { return Ok((None, None)) };
    let name = match v {
        serde_json::Value::String(s) => s,
        other => return Err(ConfigError::new("responder", format!("expected a string, got {other}"))),
    };
    if name.is_empty() || name.len() > MAX_RESPONDER_LEN || name.chars().any(|c| c.is_control()) {
        return Err(ConfigError::new(
            "responder",
            format!("must be 1 to {MAX_RESPONDER_LEN} bytes without control characters, got {name:?}"),
        ));
    }
    let rest = serde_json::to_vec(&serde_json::Value::Object(obj))
        .map_err(|e| ConfigError::new("config", format!("cannot re-encode JSON: {e}")))?;
    Ok((Some(name), Some(rest)))
}

/// Validates one `AccessLog` at `path` (`access_log[i]`).
fn access_log_from_proto(log: &AccessLog, path: &str) -> Result<AccessLogConfig, ConfigError> {
    let tc_path = join_path(path, "typed_config");
    let any: &Any = match &log.config_type {
        Some(access_log::Config_type::TypedConfig(any)) => any,
        _ => {
            return Err(ConfigError::new(
                tc_path,
                "missing: an access logger needs a typed_config",
            ))
        }
    };
    let (sink, format) = match any.type_url.as_str() {
        FILE_ACCESS_LOG_TYPE => {
            let file: FileAccessLog = parse_any(any, &tc_path)?;
            if file.path.is_empty() {
                return Err(ConfigError::new(
                    join_path(&tc_path, "path"),
                    "must not be empty",
                ));
            }
            let format = match &file.access_log_format {
                None => LogFormat::Default,
                Some(file_access_log::Access_log_format::Format(text)) if text.is_empty() => {
                    LogFormat::Default
                }
                Some(file_access_log::Access_log_format::Format(text)) => {
                    LogFormat::Text(text.clone())
                }
                Some(file_access_log::Access_log_format::JsonFormat(s))
                | Some(file_access_log::Access_log_format::TypedJsonFormat(s)) => {
                    LogFormat::Json(struct_to_json(s))
                }
                Some(file_access_log::Access_log_format::LogFormat(sfs)) => {
                    format_from_proto(sfs, &join_path(&tc_path, "log_format"))?
                }
            };
            (
                AccessLogSink::File {
                    path: file.path.clone(),
                },
                format,
            )
        }
        STDOUT_ACCESS_LOG_TYPE => {
            let out: StdoutAccessLog = parse_any(any, &tc_path)?;
            let format = match &out.access_log_format {
                None => LogFormat::Default,
                Some(stdout_access_log::Access_log_format::LogFormat(sfs)) => {
                    format_from_proto(sfs, &join_path(&tc_path, "log_format"))?
                }
            };
            (AccessLogSink::Stdout, format)
        }
        STDERR_ACCESS_LOG_TYPE => {
            let err: StderrAccessLog = parse_any(any, &tc_path)?;
            let format = match &err.access_log_format {
                None => LogFormat::Default,
                Some(stderr_access_log::Access_log_format::LogFormat(sfs)) => {
                    format_from_proto(sfs, &join_path(&tc_path, "log_format"))?
                }
            };
            (AccessLogSink::Stderr, format)
        }
        other => {
            return Err(ConfigError::new(
                tc_path,
                format!(
                    "unsupported access logger type '{other}' (supported: {FILE_ACCESS_LOG_TYPE}, \
                     {STDOUT_ACCESS_LOG_TYPE}, {STDERR_ACCESS_LOG_TYPE})"
                ),
            ))
        }
    };
    if log.filter.is_some() {
        return Err(ConfigError::new(
            join_path(path, "filter"),
            "access log filters are not supported",
        ));
    }
    Ok(AccessLogConfig {
        name: log.name.clone(),
        sink,
        format,
        has_filter: false,
    })
}

/// Parses the serialized value of an `Any` whose type URL was already matched.
fn parse_any<M: protobuf::Message>(any: &Any, path: &str) -> Result<M, ConfigError> {
    M::parse_from_bytes(&any.value)
        .map_err(|e| ConfigError::new(path, format!("cannot decode value: {e}")))
}

/// Converts a `SubstitutionFormatString` at `path` to a [`LogFormat`].
/// `omit_empty_values`, `content_type` and `json_format_options` are ignored; custom
/// `formatters` are refused.
fn format_from_proto(sfs: &SubstitutionFormatString, path: &str) -> Result<LogFormat, ConfigError> {
    if !sfs.formatters.is_empty() {
        return Err(ConfigError::new(
            join_path(path, "formatters"),
            "custom formatter extensions are not supported",
        ));
    }
    match &sfs.format {
        Some(substitution_format_string::Format::TextFormat(text)) => {
            Ok(LogFormat::Text(text.clone()))
        }
        Some(substitution_format_string::Format::JsonFormat(s)) => {
            Ok(LogFormat::Json(struct_to_json(s)))
        }
        Some(substitution_format_string::Format::TextFormatSource(source)) => {
            text_from_data_source(source, &join_path(path, "text_format_source"))
                .map(LogFormat::Text)
        }
        None => Err(ConfigError::new(
            path,
            "one of text_format, json_format or text_format_source must be set",
        )),
    }
}

/// Reads an inline `DataSource` at `path`; file and environment sources are refused.
fn text_from_data_source(source: &DataSource, path: &str) -> Result<String, ConfigError> {
    match &source.specifier {
        Some(data_source::Specifier::InlineString(text)) => Ok(text.clone()),
        Some(data_source::Specifier::InlineBytes(bytes)) => String::from_utf8(bytes.clone())
            .map_err(|_| ConfigError::new(join_path(path, "inline_bytes"), "must be valid UTF-8")),
        Some(data_source::Specifier::Filename(_)) => Err(ConfigError::new(
            join_path(path, "filename"),
            "file data sources are not supported; use inline_string",
        )),
        Some(data_source::Specifier::EnvironmentVariable(_)) => Err(ConfigError::new(
            join_path(path, "environment_variable"),
            "environment variable data sources are not supported; use inline_string",
        )),
        None => Err(ConfigError::new(
            path,
            "empty data source; set inline_string",
        )),
    }
}

#[cfg(test)]
mod tests;
