//! Every concurrency primitive of the library goes through `src/sync/` (so loom can swap it).
//! The rule is enforced by clippy (`clippy.toml`: `disallowed-types` and `disallowed-methods`,
//! allowed in `src/sync/` alone) and CI runs clippy with `-D warnings`; this test keeps that
//! configuration from losing a primitive, and `src/sync/` from losing its exemption.
// Not library code: std's primitives are fine here (the shim rule is for src/).
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
use std::path::Path;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

#[test]
fn clippy_forbids_every_primitive_outside_the_shim() {
    let cfg = read("clippy.toml");
    for banned in [
        "std::sync::atomic::AtomicBool",
        "std::sync::atomic::AtomicU32",
        "std::sync::atomic::AtomicU64",
        "std::sync::atomic::AtomicUsize",
        "std::sync::Mutex",
        "std::sync::RwLock",
        "std::sync::Condvar",
        "crossbeam_deque::Worker",
        "crossbeam_deque::Injector",
        "crossbeam_deque::Stealer",
        "arc_swap::ArcSwap",
        "std::thread::spawn",
        "std::thread::Builder::spawn",
        "std::thread::park_timeout",
    ] {
        assert!(
            cfg.contains(&format!("path = \"{banned}\"")),
            "clippy.toml no longer forbids {banned}"
        );
    }
    let shim = read("src/sync/mod.rs");
    assert!(shim.contains("#![allow(clippy::disallowed_types, clippy::disallowed_methods)]"));
}

#[test]
fn only_the_shim_is_exempt() {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    assert!(files.len() > 20);
    for f in files {
        let in_shim = f.starts_with(src.join("sync"));
        let text = std::fs::read_to_string(&f).unwrap();
        let exempt = text.contains("allow(clippy::disallowed_types")
            || text.contains("allow(clippy::disallowed_methods");
        assert!(
            in_shim || !exempt,
            "{} exempts itself from the shim rule",
            f.display()
        );
    }
}
