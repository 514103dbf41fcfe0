//! Why a config handed to the module at startup cannot be used. Envoy refuses to start and the
//! module logs the text, which always names the field (`reverse_tunnel: invalid config: ...`).

use super::lifecycle::AccessLogError;
use crate::config::ConfigError;
use crate::core::format_string::FormatError;

/// A bootstrap extension or network filter config the module refuses.
#[derive(Debug)]
pub enum SetupError {
    /// `extension_name` other than `upstream_socket_interface`.
    UnknownExtension(String),
    /// The bootstrap extension's config.
    Bootstrap(ConfigError),
    /// The bootstrap `access_log` list.
    AccessLog(AccessLogError),
    /// A network filter configured without our bootstrap extension.
    NoBootstrap { filter: String },
    /// `filter_name` other than ours (`expected`: our filter names).
    UnknownFilter { name: String, expected: [&'static str; 2] },
    /// A listener filter `filter_name` other than ours (`expected`: our listener filter names).
    UnknownListenerFilter { name: String, expected: [&'static str; 2] },
    /// A `filter_config` given to listener filter `reverse_tunnel_spares`, which takes none.
    SparesConfig,
    /// The `reverse_tunnel` filter's config.
    HandshakeFilter(ConfigError),
    /// A `validation.*_id_format` of the `reverse_tunnel` filter.
    IdFormat { field: &'static str, error: FormatError },
    /// The `reverse_tunnel_egress` filter's config.
    EgressFilter(ConfigError),
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupError::UnknownExtension(name) => {
                write!(f, "extension_name: unknown bootstrap extension '{name}' (expected 'upstream_socket_interface')")
            }
            SetupError::Bootstrap(e) => write!(f, "upstream_socket_interface config: {e}"),
            SetupError::AccessLog(e) => write!(f, "upstream_socket_interface config: {e}"),
            SetupError::NoBootstrap { filter } => write!(
                f,
                "filter '{filter}' needs the bootstrap extension 'upstream_socket_interface' of this module \
                 (envoy.bootstrap.dynamic_modules) to be configured"
            ),
            SetupError::UnknownFilter { name, expected: [a, b] } => {
                write!(f, "filter_name: unknown filter '{name}' (expected '{a}' or '{b}')")
            }
            SetupError::UnknownListenerFilter { name, expected: [a, b] } => {
                write!(f, "filter_name: unknown listener filter '{name}' (expected '{a}' or '{b}')")
            }
            SetupError::SparesConfig => write!(
                f,
                "filter_config: listener filter 'reverse_tunnel_spares' takes no config (the handshake filter behind it has the tunnel's)"
            ),
            SetupError::HandshakeFilter(e) => write!(f, "reverse_tunnel filter config: {e}"),
            SetupError::IdFormat { field, error } => write!(f, "reverse_tunnel filter config: {field}: {error}"),
            SetupError::EgressFilter(e) => write!(f, "reverse_tunnel_egress config: {e}"),
        }
    }
}

impl std::error::Error for SetupError {}

impl From<AccessLogError> for SetupError {
    fn from(e: AccessLogError) -> SetupError {
        SetupError::AccessLog(e)
    }
}
