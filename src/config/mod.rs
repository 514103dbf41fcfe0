//! Typed configuration of the three extension points, decoded from protobuf bytes (the
//! built-in's own message types, `proto/`) or from JSON (`google.protobuf.Struct`).
pub mod bootstrap;
pub mod egress;
pub mod filter;
