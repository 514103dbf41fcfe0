//! Whether this Envoy process only validates its config (`envoy --mode validate`).
//!
//! In that mode Envoy 1.40.0 builds every extension's config but loads no runtime: its
//! `envoy_dynamic_module_callback_get_runtime_{int,bool}` then dereference a null runtime and
//! crash the process (seen with gdb in `get_runtime_int`, called from the bootstrap extension's
//! `config_new`). The module cannot ask Envoy for its mode through the ABI, so it reads Envoy's
//! command line (its own process's arguments) once and, when validating, uses the runtime
//! defaults instead of calling those callbacks. Any thread.

use std::ffi::OsString;
use std::sync::OnceLock;

static VALIDATING: OnceLock<bool> = OnceLock::new();

/// True if this process was started with `--mode validate` (or `--mode=validate`); computed once
/// from the process's arguments.
pub fn validating() -> bool {
    *VALIDATING.get_or_init(|| is_validate_mode(std::env::args_os()))
}

/// True if the command line `args` (program name first, as `std::env::args_os`) asks Envoy for
/// `--mode validate` / `--mode=validate`. Arguments that are not UTF-8 are ignored.
pub fn is_validate_mode(args: impl IntoIterator<Item = OsString>) -> bool {
    let args: Vec<String> = args.into_iter().filter_map(|a| a.into_string().ok()).collect();
    args.iter().enumerate().any(|(i, a)| {
        a == "--mode=validate" || (a == "--mode" && args.get(i + 1).map(String::as_str) == Some("validate"))
    })
}

#[cfg(test)]
mod tests {
    use super::is_validate_mode;
    use std::ffi::OsString;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn finds_validate_mode_in_both_spellings() {
        assert!(is_validate_mode(args(&["envoy", "--mode", "validate", "-c", "x.yaml"])));
        assert!(is_validate_mode(args(&["envoy", "-c", "x.yaml", "--mode=validate"])));
    }

    #[test]
    fn other_modes_and_lookalikes_are_not_validate() {
        assert!(!is_validate_mode(args(&["envoy", "-c", "x.yaml"])));
        assert!(!is_validate_mode(args(&["envoy", "--mode", "serve"])));
        assert!(!is_validate_mode(args(&["envoy", "--mode"])));
        // A config path named "validate" is not the mode.
        assert!(!is_validate_mode(args(&["envoy", "-c", "validate"])));
        assert!(!is_validate_mode(args(&["envoy", "--mode", "init_only", "validate"])));
    }
}
