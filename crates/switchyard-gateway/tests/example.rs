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
    let e = GatewaySettings::parse("f.toml", "[gateway]\nworkers = 0\n").unwrap_err();
    assert!(e.contains("`workers`"), "{e}");
    let e = GatewaySettings::parse("f.toml", "[gateway]\nlisten = \"localhost\"\n").unwrap_err();
    assert!(e.contains("`listen`"), "{e}");
}
