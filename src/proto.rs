//! Rust types generated (by `build.rs`, with `protobuf-codegen`) from our `.proto` copies in
//! `proto/`: the subset of Envoy 1.40.0 messages this module decodes. Names and field numbers are
//! facts from the Envoy 1.40.0 binary (shared reference `envoy-1.40-protos.txt`).
//!
//! One generated module per `.proto` file, named after the file's basename:
//!
//! | module | proto package | messages |
//! |---|---|---|
//! | [`upstream_reverse_connection_socket_interface`] | `envoy.extensions.bootstrap.reverse_tunnel.upstream_socket_interface.v3` | `UpstreamReverseConnectionSocketInterface` (bootstrap extension config) |
//! | [`reverse_tunnel`] | `envoy.extensions.filters.network.reverse_tunnel.v3` | `ReverseTunnel`, `Validation` (handshake filter config, docs/protocol.md#filter-config) |
//! | [`jwks`] | `envoy.extensions.filters.common.jwks.v3` | `JwtHandshakeValidator`, `RemoteJwks`, `JwksAsyncFetch` (docs/protocol.md#jwt-on-the-handshake) |
//! | [`base`] | `envoy.config.core.v3` | `RequestMethod`, `DataSource`, `HttpUri`, `RetryPolicy`, `BackoffStrategy` |
//! | [`extension`] | `envoy.config.core.v3` | `TypedExtensionConfig` |
//! | [`substitution_format_string`] | `envoy.config.core.v3` | `SubstitutionFormatString`, `JsonFormatOptions` |
//! | [`accesslog`] | `envoy.config.accesslog.v3` | `AccessLog`, `AccessLogFilter` (empty placeholder) |
//! | [`file`](mod@file) | `envoy.extensions.access_loggers.file.v3` | `FileAccessLog` |
//! | [`stream`] | `envoy.extensions.access_loggers.stream.v3` | `StdoutAccessLog`, `StderrAccessLog` |
//!
//! Well-known types (`Duration`, wrappers, `Any`, `Struct`) come from
//! `protobuf::well_known_types`.

#[allow(
    missing_docs,
    unused_imports,
    unused_qualifications,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    rustdoc::all
)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/protos/mod.rs"));
}

pub use generated::*;

/// File descriptors of every generated `.proto` file, for reflection (for example to resolve
/// the type URL of a `google.protobuf.Any` written in JSON). Order: as listed in the module table.
pub fn file_descriptors() -> Vec<protobuf::reflect::FileDescriptor> {
    vec![
        upstream_reverse_connection_socket_interface::file_descriptor().clone(),
        reverse_tunnel::file_descriptor().clone(),
        jwks::file_descriptor().clone(),
        base::file_descriptor().clone(),
        extension::file_descriptor().clone(),
        substitution_format_string::file_descriptor().clone(),
        accesslog::file_descriptor().clone(),
        file::file_descriptor().clone(),
        stream::file_descriptor().clone(),
    ]
}

/// Finds the descriptor of a message declared in `proto/` by its full name (for example
/// `envoy.extensions.access_loggers.file.v3.FileAccessLog`). `None` for any other name,
/// including the well-known `google.protobuf.*` types.
pub fn message_by_full_name(full_name: &str) -> Option<protobuf::reflect::MessageDescriptor> {
    // Not `FileDescriptor::message_by_full_name`: it asserts (panics) unless the name starts
    // with a dot, and the name here comes from user config.
    fn find(
        md: protobuf::reflect::MessageDescriptor,
        full_name: &str,
    ) -> Option<protobuf::reflect::MessageDescriptor> {
        if md.full_name() == full_name {
            return Some(md);
        }
        md.nested_messages()
            .find_map(|nested| find(nested, full_name))
    }
    file_descriptors()
        .iter()
        .find_map(|fd| fd.messages().find_map(|md| find(md, full_name)))
}
