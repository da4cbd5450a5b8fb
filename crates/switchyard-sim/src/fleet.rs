//! The built-in fleet and the synthetic task attributes the traces lack.
use switchyard::ConfigError;
use switchyard::NodeSpec;
use switchyard::Router;
use switchyard::ScoringWeights;
use switchyard::{Prefix, Priority, Task, TenantId};

/// Capabilities of the built-in fleet.
pub const CAPABILITIES: [&str; 3] = ["chat", "code", "long-context"];

/// A fleet description: capability names and nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    /// Capability names.
    pub capabilities: Vec<String>,
    /// Nodes.
    pub nodes: Vec<NodeSpec>,
    /// Scoring weights of switchyard's router (a config's `[weights]`).
    pub weights: ScoringWeights,
}

impl FleetConfig {
    /// A router over this fleet.
    ///
    /// # Errors
    /// The first [`ConfigError`].
    pub fn router(&self, seed: u64) -> Result<Router, ConfigError> {
        self.builder(seed).build()
    }

    /// A router builder over this fleet, for further settings (a clock, policies).
    pub fn builder(&self, seed: u64) -> switchyard::RouterBuilder {
        Router::builder()
            .capabilities(self.capabilities.iter().cloned())
            .nodes(self.nodes.iter().cloned())
            .weights(self.weights)
            .seed(seed)
    }
}

/// The documented default fleet: ten heterogeneous nodes.
///
/// | nodes | capabilities | concurrency | prefill tok/s | decode tok/s | base ms | price /1k |
/// | --- | --- | --- | --- | --- | --- | --- |
/// | `h100-0..2` | chat, code, long-context | 64 | 12 000 | 60 | 15 | 2.0 |
/// | `a100-0..4` | chat, code, long-context | 48 | 6 000 | 40 | 20 | 1.0 |
/// | `l4-0..4` | chat, code | 16 | 2 000 | 25 | 30 | 0.3 |
///
/// Speeds are per sequence; each node slows by `1 + u` at full batch (`batch_slowdown` 1).
/// KV memory: 160 MB per 1000 tokens; 60/30/12 GB per node.
pub fn default_fleet() -> FleetConfig {
    let mut nodes = Vec::new();
    let all = ["chat", "code", "long-context"];
    for i in 0..2 {
        nodes.push(
            NodeSpec::new(format!("h100-{i}"))
                .capabilities(all)
                .max_concurrency(64)
                .max_tokens_in_flight(1_000_000)
                .memory(60_000, 160.0)
                .speed(15.0, 12_000.0, 60.0)
                .cost_per_1k_tokens(2.0),
        );
    }
    for i in 0..4 {
        nodes.push(
            NodeSpec::new(format!("a100-{i}"))
                .capabilities(all)
                .max_concurrency(48)
                .max_tokens_in_flight(500_000)
                .memory(30_000, 160.0)
                .speed(20.0, 6_000.0, 40.0)
                .cost_per_1k_tokens(1.0),
        );
    }
    for i in 0..4 {
        nodes.push(
            NodeSpec::new(format!("l4-{i}"))
                .capabilities(["chat", "code"])
                .max_concurrency(16)
                .max_tokens_in_flight(65_536)
                .memory(12_000, 160.0)
                .speed(30.0, 2_000.0, 25.0)
                .cost_per_1k_tokens(0.3),
        );
    }
    FleetConfig {
        weights: ScoringWeights::default(),
        capabilities: CAPABILITIES.iter().map(|s| s.to_string()).collect(),
        nodes,
    }
}

/// The simulated backends' service time, ms: `(base + in/prefill + out/decode) × (1 + slowdown × u)`
/// with `u` = the node's in-flight share at dispatch.
pub fn service_time_ms(spec: &NodeSpec, input: u32, output: u32, utilization: f64) -> f64 {
    spec.service_time_ms(input, output) * (1.0 + spec.batch_slowdown * utilization.clamp(0.0, 1.0))
}

/// Turns trace rows into tasks, deterministically from `seed`: every task requires `code`
/// (the bundled Azure trace is a code workload; pass `base` = "chat" for chat traces), inputs
/// over 4096 tokens also require `long-context`; priorities 10 % critical, 20 % high, 40 %
/// normal, 30 % low; 8 tenants; no latency limit; the prefix is the row's `hash_ids` (see [`Prefix`]).
///
/// # Errors
/// [`ConfigError::UnknownCapability`] if the router lacks `base` or `long-context`.
pub fn synthesize(
    router: &Router,
    rows: &[super::TraceRow],
    base: &str,
    seed: u64,
) -> Result<Vec<Task>, ConfigError> {
    let short = router.resolve(&[base])?;
    let long = router.resolve(&[base, "long-context"])?;
    let mut rng = crate::rng::Rng::new(seed);
    Ok(rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let p = match rng.below(10) {
                0 => Priority::Critical,
                1 | 2 => Priority::High,
                3..=6 => Priority::Normal,
                _ => Priority::Low,
            };
            let t = Task::new(i as u64, r.input_tokens, r.output_tokens)
                .require(if r.input_tokens > 4096 { long } else { short })
                .priority(p)
                .tenant(TenantId(rng.below(8) as u32));
            // The prefix blocks (512 tokens each) as the router's prefix keys.
            t.prefix(Prefix::from_blocks(r.hash_ids.iter().copied()))
        })
        .collect())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn default_fleet_builds_and_synthesis_is_deterministic() {
        let f = default_fleet();
        let r = f.router(1).unwrap();
        assert_eq!(r.snapshot().node_count(), 10);
        let rows: Vec<_> = (0..100)
            .map(|i| super::super::TraceRow {
                arrival_ms: i,
                input_tokens: 1000 + 100 * i as u32,
                output_tokens: 10,
                hash_ids: vec![],
            })
            .collect();
        let a = synthesize(&r, &rows, "code", 7).unwrap();
        let b = synthesize(&r, &rows, "code", 7).unwrap();
        assert_eq!(a, b);
        let long = r.resolve(&["long-context"]).unwrap();
        assert!(a
            .iter()
            .all(|t| t.constraints.required.contains_all(&long) == (t.input_tokens > 4096)));
        assert!(a
            .iter()
            .any(|t| t.constraints.priority == Priority::Critical));
        assert!(synthesize(&r, &rows, "vision", 7).is_err());
        let s = &f.nodes[0];
        assert!(
            (service_time_ms(s, 1200, 60, 1.0) - 2.0 * s.service_time_ms(1200, 60)).abs() < 1e-9
        );
    }
}
