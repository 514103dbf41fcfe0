//! Build script: compiles every `.proto` file under `proto/` (our copies of the Envoy 1.40.0
//! messages the module decodes) into Rust with `protobuf-codegen`'s pure-Rust parser (no `protoc`
//! needed). Output: `$OUT_DIR/protos/mod.rs` plus one module per `.proto` file, named after the
//! file's basename; `src/proto.rs` includes it.

use std::fs;
use std::path::{Path, PathBuf};

/// Appends every `*.proto` file below `dir` to `out` (recursively).
fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=proto");

    let root = Path::new("proto");
    let mut inputs = Vec::new();
    if let Err(err) = collect_protos(root, &mut inputs) {
        panic!("build.rs: cannot list {}: {err}", root.display());
    }
    // A stable order keeps the generated mod.rs stable.
    inputs.sort();
    if inputs.is_empty() {
        panic!("build.rs: no .proto files under {}", root.display());
    }

    protobuf_codegen::Codegen::new()
        .pure()
        .include(root)
        .inputs(&inputs)
        .cargo_out_dir("protos")
        .run_from_script();
}
