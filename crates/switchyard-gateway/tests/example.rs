//! `examples/gateway.toml` stays valid, and its `[gateway]` table shows the defaults.
use switchyard_gateway::{Gateway, GatewaySettings};

const EXAMPLE: &str = include_str!("../examples/gateway.toml");

#[test]
fn the_example_documents_the_defaults() {
    let s = GatewaySettings::parse("gateway.toml", EXAMPLE).unwrap();
    let expected = GatewaySettings {
        listen: "127.0.0.1:18100".into(),
        ..GatewaySettings::default()
    };
    assert_eq!(s, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_starts_a_gateway_over_six_nodes() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gateway.toml");
    let gw = Gateway::from_file(&path).unwrap();
    assert_eq!(gw.models(), ["llama-3.1-8b-instruct"]);
    assert_eq!(gw.router().snapshot().node_count(), 6);
    gw.close().await;
}

#[test]
fn bad_gateway_keys_are_named_with_their_line() {
    let e = GatewaySettings::parse(
        "f.toml",
        "[gateway]\nlisten = \"127.0.0.1:1\"\nttft_timout_ms = 5\n",
    )
    .unwrap_err();
    assert!(
        e.starts_with("f.toml:3:") && e.contains("ttft_timout_ms"),
        "{e}"
    );
    let e =
        GatewaySettings::parse("f.toml", "# é ü ✓\n[gateway] # ✓\nworkers = \"✓\"\n").unwrap_err();
    assert!(e.starts_with("f.toml:3:"), "{e}");
    let e = GatewaySettings::parse("f.toml", "[gateway]\nworkers = 0\n").unwrap_err();
    assert!(e.contains("`workers`"), "{e}");
    let e = GatewaySettings::parse("f.toml", "[gateway]\nlisten = \"localhost\"\n").unwrap_err();
    assert!(e.contains("`listen`"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_from_a_parsed_config_reloads_only_by_apply() {
    let cfg = switchyard::Config::parse("inline", EXAMPLE).unwrap();
    let settings = GatewaySettings::from_table(cfg.gateway.as_ref()).unwrap();
    assert_eq!(settings.listen, "127.0.0.1:18100");
    let gw = Gateway::new(&cfg, settings.clone()).unwrap();
    assert!(gw.reload().is_err(), "no file to reload");
    assert!(gw.watch_config().is_none());
    // A config with no url for a node is refused, and the fleet stays.
    let mut bad = cfg.clone();
    bad.nodes[0].url = None;
    let e = gw.apply(&bad, settings.clone()).unwrap_err();
    assert!(e.to_string().contains("has no `url`"), "{e}");
    bad.nodes[0].url = Some("ftp://x".into());
    assert!(gw.apply(&bad, settings.clone()).is_err());
    assert_eq!(gw.router().snapshot().node_count(), 6);
    let mut fewer = cfg.clone();
    fewer.nodes.truncate(2);
    let mut changed = settings.clone();
    changed.workers = 3;
    changed.default_max_tokens = 9;
    let report = gw.apply(&fewer, changed).unwrap();
    assert_eq!(report.removed, 4);
    assert_eq!(gw.settings().default_max_tokens, 9);
    let bad_table: toml::Table = toml::from_str("workers = \"many\"").unwrap();
    assert!(GatewaySettings::from_table(Some(&bad_table))
        .unwrap_err()
        .contains("workers"));
    gw.close().await;
}

#[test]
fn a_gateway_needs_a_runtime() {
    let cfg = switchyard::Config::parse("inline", EXAMPLE).unwrap();
    let e = Gateway::new(&cfg, GatewaySettings::default()).unwrap_err();
    assert!(e.to_string().contains("tokio runtime"));
}
