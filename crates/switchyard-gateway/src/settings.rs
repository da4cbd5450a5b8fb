//! The `[gateway]` table of the fleet file: where the gateway listens, its timeouts and limits.
use std::collections::BTreeMap;

use serde::Deserialize;

/// Settings of the HTTP side, read from the `[gateway]` table of the fleet file.
///
/// Every key is optional; `docs/gateway.md` lists them with their defaults. Unknown keys are
/// errors, so a typo cannot be silently ignored. Keys marked *reloadable* take effect on a hot
/// reload; the others are read once at start.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySettings {
    /// Listen address (`--listen` overrides it). Read once.
    pub listen: String,
    /// Connecting to a model server, ms (a refused or timed-out connect fails over). Read once
    /// (it belongs to the connection pool).
    pub connect_timeout_ms: u64,
    /// From sending a streaming request upstream to its first content chunk, ms; past it the
    /// attempt fails over as a timeout. Reloadable.
    pub ttft_timeout_ms: u64,
    /// Longest gap between two chunks of a stream once it has started, ms. Reloadable.
    pub idle_timeout_ms: u64,
    /// Whole request, from its arrival to the last byte, ms (a non-streaming answer must
    /// arrive within it). Reloadable.
    pub total_timeout_ms: u64,
    /// Largest request body accepted, bytes (413 past it). Reloadable.
    pub max_body_bytes: usize,
    /// Largest non-streaming answer read from a model server, bytes. Reloadable.
    pub max_response_bytes: usize,
    /// Output tokens assumed for a request without `max_tokens` / `max_completion_tokens`.
    /// Reloadable.
    pub default_max_tokens: u32,
    /// Bytes of prompt text per prefix block: the prompt is cut into blocks this long, and
    /// the node that recently served the longest run of the same blocks gets the
    /// prefix-affinity credit (0: no prefix; at most 1 MiB). Reloadable.
    pub prefix_block_bytes: usize,
    /// Add `stream_options.include_usage = true` to streaming requests that do not set it, so
    /// the lease settles to the server's token count (the usage chunk then reaches the client
    /// too). Off: tokens are counted from the content chunks. Reloadable.
    pub include_usage: bool,
    /// `Retry-After` of a request the gateway sheds, seconds. Reloadable.
    pub retry_after_s: u64,
    /// How long a model server's 429 without `Retry-After` pauses it, ms. Reloadable.
    pub default_pause_ms: u64,
    /// Longest pause a model server's `Retry-After` may ask for, ms. Reloadable.
    pub max_pause_ms: u64,
    /// How long in-flight requests may run after SIGTERM/SIGINT before the gateway exits, ms.
    /// Reloadable.
    pub shutdown_grace_ms: u64,
    /// How often the fleet file's modification time is checked, ms. Read once.
    pub reload_interval_ms: u64,
    /// Dispatcher worker threads (the per-core queues). Read once.
    pub workers: usize,
    /// Route a request on the I/O thread that received it while the dispatcher has nothing
    /// queued and nothing waiting for room (`Dispatcher::submit_inline`), instead of waking a
    /// worker; off: every request goes through the workers' queues. Reloadable.
    pub route_inline: bool,
    /// Tokio I/O threads (0: one per core). Read once; used by the binary.
    pub io_threads: usize,
    /// Requests queued in the dispatcher before new ones get 503. Read once.
    pub queue_capacity: usize,
    /// How long a request whose routes are all full may wait for capacity, per class
    /// (critical, high, normal, low), ms, before it is shed with 503. Read once.
    pub saturation_wait_ms: [u64; 4],
    /// Client connections served at once; further ones wait in the listen backlog. Read once.
    pub max_connections: usize,
    /// Idle pooled connections kept per model server. Read once.
    pub pool_max_idle_per_host: usize,
    /// Tenant names accepted in `x-switchyard-tenant`, mapped to the tenant ids of the
    /// `[[tenant]]` rate limits. Reloadable.
    pub tenants: BTreeMap<String, u32>,
    /// Seed of the router's random choices. Read once.
    pub seed: u64,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8000".into(),
            connect_timeout_ms: 1_000,
            ttft_timeout_ms: 30_000,
            idle_timeout_ms: 30_000,
            total_timeout_ms: 600_000,
            route_inline: true,
            max_body_bytes: 4 << 20,
            max_response_bytes: 64 << 20,
            default_max_tokens: 256,
            prefix_block_bytes: 512,
            include_usage: false,
            retry_after_s: 1,
            default_pause_ms: 1_000,
            max_pause_ms: 60_000,
            shutdown_grace_ms: 30_000,
            reload_interval_ms: 500,
            workers: 1,
            io_threads: 0,
            queue_capacity: 4_096,
            saturation_wait_ms: [1_000, 500, 200, 50],
            max_connections: 10_000,
            pool_max_idle_per_host: 256,
            tenants: BTreeMap::new(),
            seed: 0x5eed,
        }
    }
}

/// The 1-based line of byte offset `at` (bytes, so any offset is safe).
fn line_of(text: &str, at: usize) -> usize {
    let end = at.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    gateway: Option<GatewaySettings>,
}

impl GatewaySettings {
    /// Reads the `[gateway]` table of a fleet file's text (the defaults when there is none).
    ///
    /// # Errors
    /// A message naming `source_name`, the line and the key: a wrong type, an unknown key, or a
    /// value out of range.
    pub fn parse(source_name: &str, text: &str) -> Result<Self, String> {
        // Only `[gateway]` is read here; the other tables are the router's.
        let file: File = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            match line {
                Some(l) => format!("{source_name}:{l}: [gateway]: {}", e.message()),
                None => format!("{source_name}: [gateway]: {}", e.message()),
            }
        })?;
        let s = file.gateway.unwrap_or_default();
        s.validate()
            .map_err(|e| format!("{source_name}: [gateway]: {e}"))?;
        Ok(s)
    }

    /// Reads settings from an already parsed `[gateway]` table (as `Config::gateway` holds it).
    ///
    /// # Errors
    /// A message naming the bad key.
    pub fn from_table(table: Option<&toml::Table>) -> Result<Self, String> {
        let s: Self = match table {
            Some(t) => {
                // Through text, so that an error points at the offending line.
                let text = toml::to_string(t).map_err(|e| format!("[gateway]: {e}"))?;
                toml::from_str(&text).map_err(|e: toml::de::Error| {
                    let at = e.span().and_then(|s| {
                        let line = line_of(&text, s.start);
                        text.lines().nth(line - 1).map(str::trim)
                    });
                    match at {
                        Some(line) if !line.is_empty() => {
                            format!("[gateway]: `{line}`: {}", e.message())
                        }
                        _ => format!("[gateway]: {}", e.message()),
                    }
                })?
            }
            None => Self::default(),
        };
        s.validate().map_err(|e| format!("[gateway]: {e}"))?;
        Ok(s)
    }

    /// Checks every value is in range.
    ///
    /// # Errors
    /// The first key out of range.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("ttft_timeout_ms", self.ttft_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("total_timeout_ms", self.total_timeout_ms),
            ("max_body_bytes", self.max_body_bytes as u64),
            ("max_response_bytes", self.max_response_bytes as u64),
            ("default_max_tokens", u64::from(self.default_max_tokens)),
            ("reload_interval_ms", self.reload_interval_ms),
            ("workers", self.workers as u64),
            ("queue_capacity", self.queue_capacity as u64),
            ("max_connections", self.max_connections as u64),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(format!("`{key}` must be at least 1"));
            }
        }
        // Durations past a day are typos, and would overflow an Instant on some platforms.
        const DAY_MS: u64 = 86_400_000;
        let durations = [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("ttft_timeout_ms", self.ttft_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("total_timeout_ms", self.total_timeout_ms),
            ("default_pause_ms", self.default_pause_ms),
            ("max_pause_ms", self.max_pause_ms),
            ("shutdown_grace_ms", self.shutdown_grace_ms),
            ("reload_interval_ms", self.reload_interval_ms),
            ("retry_after_s", self.retry_after_s.saturating_mul(1_000)),
        ];
        for (key, v) in durations {
            if v > DAY_MS {
                return Err(format!("`{key}` must be at most a day"));
            }
        }
        if self.saturation_wait_ms.iter().any(|&w| w > DAY_MS) {
            return Err("`saturation_wait_ms` must be at most a day each".into());
        }
        if self.prefix_block_bytes > 1 << 20 {
            return Err("`prefix_block_bytes` must be at most 1048576".into());
        }
        if self.workers > 256 {
            return Err("`workers` must be at most 256".into());
        }
        if self.io_threads > 1024 {
            return Err("`io_threads` must be at most 1024".into());
        }
        if self.queue_capacity > 1 << 24 {
            return Err("`queue_capacity` must be at most 16777216".into());
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!(
                "`listen` must be an IP address and port, not {:?}",
                self.listen
            ));
        }
        Ok(())
    }
}
