//! Manifest text, as an operator or a deploy writes it: checking it never
//! panics, every refusal names the file, and checking twice agrees.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

/// A folder with two (empty) component files for routes to name.
fn folder() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("edgehost-fuzz-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a folder for the fuzzed manifests");
        for name in ["a.wasm", "b.wasm"] {
            std::fs::write(dir.join(name), b"").expect("a component file");
        }
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = folder().join("manifest.toml");
    let secrets = |name: &str| (name == "PRESENT").then(|| "s3cret".to_string());
    let first = edgehost::manifest::parse(&file, text, &secrets);
    if let Err(errors) = &first {
        let shown = errors.to_string();
        assert!(
            shown.starts_with(&file.display().to_string()),
            "an error that does not name the file: {shown}"
        );
    }
    let again = edgehost::manifest::parse(&file, text, &secrets);
    assert_eq!(first.is_ok(), again.is_ok(), "{text:?}");
});
