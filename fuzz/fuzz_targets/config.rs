//! Arbitrary text as a fleet configuration file.
//!
//! What must hold, whatever the bytes:
//! * parsing never panics: it yields a config or a [`ConfigFileError`] whose message names the
//!   source ("fuzz") and a line (`fuzz:<line>:`), and whose `line()` is that line;
//! * a config that parses builds a router, whose snapshot's invariants hold and whose nodes
//!   are the config's;
//! * applying it to a live router holding a lease either fails (only for too many capability
//!   names in all) or leaves exactly the config's nodes, the lease still counted, and every
//!   ledger at zero once the lease is dropped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::{Config, ConfigFileError, Router, Task};

/// The message starts `fuzz:<line>` with the line `line()` reports.
fn check_error(e: &ConfigFileError) {
    let shown = e.to_string();
    let line = e.line().expect("a parse error has a line");
    assert!(line >= 1, "{shown}");
    let prefix = format!("fuzz:{line}");
    assert!(shown.starts_with(&prefix), "{shown}");
    assert!(
        matches!(shown.as_bytes().get(prefix.len()), Some(b':')),
        "{shown}"
    );
    assert_eq!(e.file(), "fuzz");
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let cfg = match Config::parse("fuzz", &text) {
        Ok(cfg) => cfg,
        Err(e) => {
            check_error(&e);
            return;
        }
    };
    // Parsing validated it: it builds.
    let router = match cfg.build_router(1) {
        Ok(r) => r,
        Err(e) => panic!("a parsed config does not build: {e}"),
    };
    let snap = router.snapshot();
    snap.check_invariants().expect("snapshot invariants");
    assert_eq!(router.node_specs(), cfg.node_specs());
    assert_eq!(snap.node_count(), cfg.nodes.len());

    // Hot reload onto a router with a lease out.
    let live = Router::builder()
        .capabilities(["chat"])
        .node(switchyard::NodeSpec::new("base").capabilities(["chat"]))
        .build()
        .expect("the base fleet builds");
    let (_, lease) = live
        .reader()
        .route(&Task::new(0, 10, 10))
        .expect("the base fleet routes");
    match live.apply_config(&cfg) {
        Ok(report) => {
            let snap = live.snapshot();
            snap.check_invariants()
                .expect("snapshot invariants after reload");
            assert_eq!(report.epoch, snap.epoch());
            let by_name = |mut v: Vec<switchyard::NodeSpec>| {
                v.sort_by(|a, b| a.name.cmp(&b.name));
                v
            };
            assert_eq!(by_name(live.node_specs()), by_name(cfg.node_specs()));
            assert_eq!(live.in_flight(), 1);
            let mut reader = live.reader();
            if let Ok((_, l)) = reader.route(&Task::new(1, 10, 10)) {
                drop(l);
            }
        }
        Err(e) => {
            // Only the capability names of both fleets together can be too many, or the
            // config lists no node (a reload never empties the fleet).
            let empty = cfg.node_specs().is_empty();
            assert!(
                matches!(
                    e.config_error(),
                    Some(switchyard::ConfigError::TooManyCapabilities { .. })
                ) || (empty
                    && matches!(e.config_error(), Some(switchyard::ConfigError::EmptyFleet))),
                "{e}"
            );
            assert!(e.to_string().starts_with("fuzz"), "{e}");
        }
    }
    drop(lease);
    assert!(live.ledgers_are_zero());
});
