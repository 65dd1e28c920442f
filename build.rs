//! Link search paths for the recognizers' C libraries.
//!
//! - libvosk comes from the PyPI wheel `vosk==0.3.45` (no distro package): its directory is
//!   `IVR_VOSK_LIB_DIR`, default `<repo>/vendor/vosk` (where `scripts/dev setup` puts it). An
//!   rpath makes the binary and the tests find it at run time without `LD_LIBRARY_PATH`.
//! - PocketSphinx and SphinxBase are the Debian libraries (`libpocketsphinx-dev`).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=IVR_VOSK_LIB_DIR");
    println!("cargo:rerun-if-changed=build.rs");
    let dir = match std::env::var_os("IVR_VOSK_LIB_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => {
            // Cargo always sets it for build scripts.
            let root = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default();
            PathBuf::from(root).join("vendor").join("vosk")
        }
    };
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    if !dir.join("libvosk.so").exists() {
        println!(
            "cargo:warning=libvosk.so not found in {} (set IVR_VOSK_LIB_DIR or run `scripts/dev setup`)",
            dir.display()
        );
    }
    // The sphinx libraries are plain system libraries; their pkg-config names are the lib names.
    println!("cargo:rustc-link-lib=pocketsphinx");
    println!("cargo:rustc-link-lib=sphinxbase");
}
