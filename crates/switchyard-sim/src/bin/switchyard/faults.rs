//! `--fault` scenarios for the main job: windows in trace seconds during which a node (or the
//! whole fleet) misbehaves.
//!
//! | spec | effect |
//! | --- | --- |
//! | `down:NODE:START:END` | the node answers every request with a server error (after 5 ms) |
//! | `flap:NODE:PERIOD:START:END` | down for one period, up for the next, and so on |
//! | `ratelimit:NODE:START:END` | the node answers 429 (after 2 ms) |
//! | `slow:NODE:FACTOR:START:END` | the node takes FACTOR times as long |
//! | `outage:START:END` | every node is down |
use std::fmt;

/// The largest slowdown a fault may ask for: a thousand times its service time already makes
/// a node useless, and a bound keeps every simulated delay representable.
const MAX_SLOW_FACTOR: f64 = 1000.0;

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Effect {
    Down,
    RateLimited,
    Slow(f64),
}

/// One scheduled fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub spec: String,
    /// `None`: every node.
    pub node: Option<String>,
    pub effect: Effect,
    /// Flapping period, s (0 = steady).
    pub period_s: f64,
    pub start_s: f64,
    pub end_s: f64,
}

#[derive(Debug)]
pub struct FaultError(String);

impl fmt::Display for FaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FaultError {}

impl Fault {
    pub fn parse(spec: &str) -> Result<Fault, FaultError> {
        let bad = |why: &str| FaultError(format!("--fault `{spec}`: {why}"));
        let parts: Vec<&str> = spec.split(':').collect();
        let num = |s: &str, what: &str| -> Result<f64, FaultError> {
            let v: f64 = s
                .parse()
                .map_err(|_| bad(&format!("{what} `{s}` is not a number")))?;
            if v.is_finite() && v >= 0.0 {
                Ok(v)
            } else {
                Err(bad(&format!("{what} must be a non-negative number")))
            }
        };
        let window = |a: &str, b: &str| -> Result<(f64, f64), FaultError> {
            let (s, e) = (num(a, "start")?, num(b, "end")?);
            if e <= s {
                return Err(bad("end must be after start"));
            }
            Ok((s, e))
        };
        let node = |n: &str| -> Result<Option<String>, FaultError> {
            if n.is_empty() {
                Err(bad("empty node name"))
            } else {
                Ok(Some(n.to_string()))
            }
        };
        let mk = |node, effect, period_s, (start_s, end_s)| Fault {
            spec: spec.to_string(),
            node,
            effect,
            period_s,
            start_s,
            end_s,
        };
        match parts.as_slice() {
            ["down", n, a, b] => Ok(mk(node(n)?, Effect::Down, 0.0, window(a, b)?)),
            ["flap", n, p, a, b] => {
                let period = num(p, "period")?;
                if period <= 0.0 {
                    return Err(bad("period must be positive"));
                }
                Ok(mk(node(n)?, Effect::Down, period, window(a, b)?))
            }
            ["ratelimit", n, a, b] => Ok(mk(node(n)?, Effect::RateLimited, 0.0, window(a, b)?)),
            ["slow", n, f, a, b] => {
                let factor = num(f, "factor")?;
                if !(1.0..=MAX_SLOW_FACTOR).contains(&factor) {
                    return Err(bad("factor must be from 1 to 1000"));
                }
                Ok(mk(node(n)?, Effect::Slow(factor), 0.0, window(a, b)?))
            }
            ["outage", a, b] => Ok(mk(None, Effect::Down, 0.0, window(a, b)?)),
            _ => Err(bad(
                "expected down:NODE:START:END, flap:NODE:PERIOD:START:END, ratelimit:NODE:START:END, slow:NODE:FACTOR:START:END or outage:START:END",
            )),
        }
    }

    /// Whether the fault hits `node` at trace time `t` (seconds).
    pub fn hits(&self, node: &str, t: f64) -> bool {
        if t < self.start_s || t >= self.end_s || self.node.as_deref().is_some_and(|n| n != node) {
            return false;
        }
        self.period_s == 0.0 || ((t - self.start_s) / self.period_s) as u64 % 2 == 0
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn parses_and_schedules() {
        let f = Fault::parse("down:a100-0:10:20").unwrap();
        assert!(f.hits("a100-0", 10.0) && !f.hits("a100-0", 20.0) && !f.hits("l4-0", 15.0));
        let f = Fault::parse("flap:n:5:0:100").unwrap();
        assert!(f.hits("n", 1.0) && !f.hits("n", 6.0) && f.hits("n", 11.0));
        assert!(Fault::parse("outage:1:2").unwrap().hits("anything", 1.5));
        assert_eq!(
            Fault::parse("slow:n:10:0:5").unwrap().effect,
            Effect::Slow(10.0)
        );
        assert_eq!(
            Fault::parse("ratelimit:n:0:5").unwrap().effect,
            Effect::RateLimited
        );
        for bad in [
            "down:n:5:1",
            "slow:n:0.5:0:1",
            "slow:n:1e300:0:1",
            "slow:n:inf:0:1",
            "flap:n:0:0:1",
            "boom",
            "down::0:1",
            "down:n:x:1",
            "outage:1:nan",
        ] {
            assert!(Fault::parse(bad).is_err(), "{bad}");
        }
    }
}
