//! The documented example fleet file of the core crate (`crates/switchyard/examples/fleet.toml`)
//! is the simulator's built-in fleet, key for key.
use std::path::Path;

use switchyard::{Config, ScoringWeights, Task};

fn example() -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../switchyard/examples/fleet.toml");
    Config::load(&path).expect("examples/fleet.toml loads")
}

#[test]
fn the_example_file_is_the_default_fleet() {
    let cfg = example();
    let fleet = switchyard_sim::default_fleet();
    assert_eq!(cfg.capabilities, fleet.capabilities);
    assert_eq!(cfg.node_specs(), fleet.nodes);
    assert_eq!(cfg.scoring_weights(), ScoringWeights::default());
    assert!(cfg.chains.is_empty());
    assert!(cfg.source_name().ends_with("fleet.toml"));

    let r = cfg.build_router(1).unwrap();
    assert_eq!(r.snapshot().node_count(), 10);
    assert_eq!(r.node_specs(), fleet.router(1).unwrap().node_specs());
    let long = r.resolve(&["code", "long-context"]).unwrap();
    let (routes, lease) = r
        .reader()
        .route(&Task::new(1, 8_000, 100).require(long))
        .unwrap();
    let name = r
        .snapshot()
        .route_name(routes.primary().route.route)
        .unwrap()
        .to_string();
    assert!(
        name.starts_with("h100-") || name.starts_with("a100-"),
        "{name}"
    );
    assert_eq!(r.in_flight(), 1);
    drop(lease);
    assert!(r.ledgers_are_zero());
}

#[test]
fn the_gateway_example_is_a_loopback_fleet_serving_one_model() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../switchyard-gateway/examples/gateway.toml");
    let cfg = Config::load(&path).expect("examples/gateway.toml loads");
    assert_eq!(cfg.models(), ["llama-3.1-8b-instruct"]);
    let urls = cfg.node_urls();
    assert_eq!(urls.len(), 6);
    assert!(urls.iter().all(|(_, u)| u.starts_with("http://127.0.0.1:")));
    let r = cfg.build_router(1).unwrap();
    let model = r.resolve(&["llama-3.1-8b-instruct"]).unwrap();
    let (_, lease) = r
        .reader()
        .route(&Task::new(1, 500, 50).require(model))
        .unwrap();
    drop(lease);
    assert!(r.ledgers_are_zero());
}
