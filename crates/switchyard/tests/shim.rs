//! Every concurrency primitive of the library goes through `src/sync/` (so loom can swap it):
//! no other source file may name `std::sync` atomics, locks or `std::thread` spawning.
//! (A std `Arc` that only shares immutable data, or converts a public `Arc<dyn Clock>`, is
//! allowed: loom has nothing to check there.)
use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "sync" || n == "bin") {
                continue; // the shim itself; the CLI is not library code
            }
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn library_code_uses_the_sync_shim() {
    let mut files = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    assert!(files.len() > 10);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for banned in [
                "std::sync::atomic",
                "std::sync::Mutex",
                "std::sync::RwLock",
                "std::thread::spawn",
                "crossbeam_deque::",
            ] {
                assert!(
                    !code.contains(banned),
                    "{}:{}: `{banned}` outside src/sync: use crate::sync",
                    f.display(),
                    i + 1
                );
            }
        }
    }
}
