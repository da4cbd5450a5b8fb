//! The `[fleet]` table of the gateway config.
use std::time::Duration;

/// Fleet mode's settings (the `[fleet]` table; see `docs/fleet.md`).
#[derive(Debug, Clone, PartialEq)]
pub struct FleetSettings {
    /// Redis (or Valkey) url, `redis://host:port[/db]`.
    pub redis: String,
    /// This replica's name, unique in the fleet.
    pub replica: String,
    /// How often the replica publishes its view and reads the others' (ms).
    pub sync_interval_ms: u64,
    /// Share of each tenant rate this replica keeps while Redis is unreachable (0–1);
    /// `None`: 1 / the replicas last seen alive.
    pub local_share: Option<f64>,
    /// While Redis is unreachable, refuse every request of a rate-limited tenant (429)
    /// instead of admitting its local share.
    pub fail_closed: bool,
    /// Prefix of every Redis key, so several fleets can share one Redis.
    pub key_prefix: String,
    /// Size of a tenant slice drawn from the global budget, in ms of the tenant's rate.
    pub slice_ms: u64,
    /// A slice unspent this long goes back to the global budget (ms).
    pub slice_ttl_ms: u64,
    /// How long a starting replica waits for its first sync before it reports ready (ms).
    pub warm_start_timeout_ms: u64,
}

impl FleetSettings {
    /// A fleet on `redis` as `replica`, every other key at its default.
    pub fn new(redis: impl Into<String>, replica: impl Into<String>) -> Self {
        Self {
            redis: redis.into(),
            replica: replica.into(),
            sync_interval_ms: 100,
            local_share: None,
            fail_closed: false,
            key_prefix: "switchyard".into(),
            slice_ms: 200,
            slice_ttl_ms: 2000,
            warm_start_timeout_ms: 2000,
        }
    }

    /// The sync interval.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.sync_interval_ms)
    }

    /// Reads a `[fleet]` table; an unknown key or a bad value is an error naming it.
    ///
    /// # Errors
    /// The first bad key, as `SOURCE: [fleet] KEY: why`.
    pub fn from_table(source: &str, t: &toml::Table) -> Result<Self, String> {
        let err = |k: &str, why: &str| format!("{source}: [fleet] {k}: {why}");
        let str_of = |k: &str| -> Result<Option<String>, String> {
            match t.get(k) {
                None => Ok(None),
                Some(toml::Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
                Some(_) => Err(err(k, "must be a non-empty string")),
            }
        };
        let ms_of = |k: &str, lo: u64, hi: u64| -> Result<Option<u64>, String> {
            match t.get(k) {
                None => Ok(None),
                Some(toml::Value::Integer(v)) if (lo as i64..=hi as i64).contains(v) => {
                    Ok(Some(*v as u64))
                }
                Some(_) => Err(err(k, &format!("must be an integer from {lo} to {hi}"))),
            }
        };
        for k in t.keys() {
            if ![
                "redis",
                "replica",
                "sync_interval_ms",
                "local_share",
                "fail_closed",
                "key_prefix",
                "slice_ms",
                "slice_ttl_ms",
                "warm_start_timeout_ms",
            ]
            .contains(&k.as_str())
            {
                return Err(err(k, "unknown key"));
            }
        }
        let redis = str_of("redis")?.ok_or_else(|| err("redis", "missing (the Redis url)"))?;
        if !(redis.starts_with("redis://") || redis.starts_with("valkey://")) {
            return Err(err("redis", "must be a redis://host:port url"));
        }
        let replica = match str_of("replica")? {
            Some(r) => r,
            None => format!("replica-{}", std::process::id()),
        };
        if replica.chars().any(|c| c.is_whitespace()) {
            return Err(err("replica", "must not contain whitespace"));
        }
        let mut s = Self::new(redis.replacen("valkey://", "redis://", 1), replica);
        if let Some(v) = ms_of("sync_interval_ms", 10, 60_000)? {
            s.sync_interval_ms = v;
        }
        s.slice_ms = s.slice_ms.max(2 * s.sync_interval_ms);
        s.slice_ttl_ms = s.slice_ttl_ms.max(4 * s.sync_interval_ms);
        if let Some(v) = ms_of("slice_ms", 1, 60_000)? {
            s.slice_ms = v;
        }
        if let Some(v) = ms_of("slice_ttl_ms", 10, 3_600_000)? {
            s.slice_ttl_ms = v;
        }
        if let Some(v) = ms_of("warm_start_timeout_ms", 0, 60_000)? {
            s.warm_start_timeout_ms = v;
        }
        match t.get("local_share") {
            None => {}
            Some(toml::Value::Float(f)) if *f > 0.0 && *f <= 1.0 => s.local_share = Some(*f),
            Some(toml::Value::Integer(1)) => s.local_share = Some(1.0),
            Some(_) => return Err(err("local_share", "must be a number in (0, 1]")),
        }
        match t.get("fail_closed") {
            None => {}
            Some(toml::Value::Boolean(b)) => s.fail_closed = *b,
            Some(_) => return Err(err("fail_closed", "must be true or false")),
        }
        if let Some(p) = str_of("key_prefix")? {
            s.key_prefix = p;
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FleetSettings, String> {
        FleetSettings::from_table("f.toml", &text.parse::<toml::Table>().unwrap())
    }

    #[test]
    fn defaults_and_errors() {
        let s = parse("redis = \"redis://127.0.0.1:6379\"\nreplica = \"a\"").unwrap();
        assert_eq!(s.sync_interval_ms, 100);
        assert_eq!(s.slice_ms, 200);
        assert!(!s.fail_closed);
        let s = parse("redis = \"redis://h:1\"\nsync_interval_ms = 250\nfail_closed = true\nlocal_share = 0.5").unwrap();
        assert_eq!(
            (s.sync_interval_ms, s.slice_ms, s.slice_ttl_ms),
            (250, 500, 2000)
        );
        assert_eq!(s.local_share, Some(0.5));
        assert!(s.fail_closed);
        assert!(parse("replica = \"a\"")
            .unwrap_err()
            .contains("[fleet] redis"));
        assert!(parse("redis = \"http://x\"").is_err());
        assert!(parse("redis = \"redis://h:1\"\nsync_interval_ms = 0")
            .unwrap_err()
            .contains("sync_interval_ms"));
        assert!(parse("redis = \"redis://h:1\"\nlocal_share = 2.0").is_err());
        assert!(parse("redis = \"redis://h:1\"\nbogus = 1")
            .unwrap_err()
            .contains("bogus: unknown key"));
    }
}
