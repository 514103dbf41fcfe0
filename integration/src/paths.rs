//! Locating the repository, the Envoy binary, the module and the config templates; free ports.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Name of the module's shared object (`dynamic_module_config.name: reverse_tunnel`).
pub const MODULE_FILE: &str = "libreverse_tunnel.so";

/// The repository root: the parent of this crate's directory (`integration/..`).
pub fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(Path::to_path_buf).unwrap_or_else(|| here.to_path_buf())
}

/// The Envoy binary to run.
///
/// Order: env `ENVOY_BIN`; else the real ELF of the project venv
/// (`<repo>/.venv/lib/python3.*/site-packages/envoy/_bin/envoy`; NOT `.venv/bin/envoy`, which is a
/// python wrapper whose PID is not Envoy's); else `envoy` from `PATH`.
pub fn envoy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ENVOY_BIN") {
        if !p.is_empty() {
            return PathBuf::from(p);
        }
    }
    let lib = repo_root().join(".venv").join("lib");
    if let Ok(entries) = std::fs::read_dir(&lib) {
        let mut candidates: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
            .map(|e| {
                e.path()
                    .join("site-packages")
                    .join("envoy")
                    .join("_bin")
                    .join("envoy")
            })
            .filter(|p| p.is_file())
            .collect();
        candidates.sort();
        if let Some(p) = candidates.pop() {
            return p;
        }
    }
    PathBuf::from("envoy")
}

/// Directory holding `libreverse_tunnel.so`: env `RT_MODULE_DIR`, else `<repo>/target/release`.
/// Passed to every Envoy as `ENVOY_DYNAMIC_MODULES_SEARCH_PATH`.
pub fn module_dir() -> PathBuf {
    match std::env::var_os("RT_MODULE_DIR") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo_root().join("target").join("release"),
    }
}

/// Full path of the module's shared object in [`module_dir`].
pub fn module_path() -> PathBuf {
    module_dir().join(MODULE_FILE)
}

/// Fails with a clear message unless the module's shared object exists.
pub fn require_module() -> Result<PathBuf> {
    let p = module_path();
    if p.is_file() {
        Ok(p)
    } else {
        Err(Error(format!(
            "{} not found: build the module first (cargo build --release -p reverse_tunnel) \
             or set RT_MODULE_DIR",
            p.display()
        )))
    }
}

/// Directory of the Envoy config templates: env `RT_CONFIG_DIR`, else `<repo>/envoy-config`.
pub fn config_dir() -> PathBuf {
    match std::env::var_os("RT_CONFIG_DIR") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo_root().join("envoy-config"),
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, release it).
///
/// There is an unavoidable window before the caller binds it; ports come from the kernel's
/// ephemeral range, so collisions between concurrent callers are very unlikely.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(l.local_addr()?.port())
}

/// `n` distinct free ports (all held at once while picking, so they differ from each other).
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind(("127.0.0.1", 0)))
        .collect::<std::io::Result<_>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}
