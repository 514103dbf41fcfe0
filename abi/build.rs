//! Generates Rust declarations from `abi.h` (our own header) with bindgen.
//! Needs libclang at build time: `make setup` installs Debian's `libclang-dev`.
use std::env;
use std::path::PathBuf;

/// Strips the C enum's own name from each enumerator, so
/// `envoy_dynamic_module_type_log_level_Info` reads `envoy_dynamic_module_type_log_level::Info`.
#[derive(Debug)]
struct StripEnumPrefix;

impl bindgen::callbacks::ParseCallbacks for StripEnumPrefix {
    fn enum_variant_name(
        &self,
        enum_name: Option<&str>,
        original: &str,
        _value: bindgen::callbacks::EnumVariantValue,
    ) -> Option<String> {
        let enum_name = enum_name?.trim_start_matches("enum ");
        original
            .strip_prefix(enum_name)
            .map(|rest| rest.trim_start_matches('_').to_string())
    }
}

fn main() {
    println!("cargo:rerun-if-changed=abi.h");
    let bindings = bindgen::Builder::default()
        .header("abi.h")
        .allowlist_function("envoy_dynamic_module_callback_.*")
        .allowlist_type("envoy_dynamic_module_.*")
        // C enums arrive as plain integers that Envoy may extend: never a Rust enum (UB on an
        // unknown value). Each becomes a module of `u32` constants.
        .default_enum_style(bindgen::EnumVariation::ModuleConsts)
        .parse_callbacks(Box::new(StripEnumPrefix))
        .layout_tests(true)
        .generate()
        .expect("bindgen could not read abi/abi.h (is libclang installed? run `make setup`)");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("bindings.rs");
    bindings.write_to_file(out).expect("write bindings.rs");
}
