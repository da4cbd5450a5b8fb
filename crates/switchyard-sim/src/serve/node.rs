//! One simulated model server's state: admission (concurrency and KV memory, a FIFO of
//! waiting requests), the prefix cache, the counters and the injected fault.
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use switchyard::NodeSpec;
use tokio::sync::{oneshot, Notify};

use crate::cache::{PrefixCache, BLOCK_TOKENS};

/// A fault injected into one simulated server. The default is no fault.
///
/// Set with `--fault` on the command line, `POST /control/fault` on the server itself (a JSON
/// object of these fields; `{}` clears), `POST /control/fault/NODE` on the control port, or
/// [`ServerSet::set_fault`](super::ServerSet::set_fault).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fault {
    /// The server is down: its port refuses connections and open connections are closed
    /// without an answer.
    pub down: bool,
    /// Service times are multiplied by this (1 = normal speed).
    pub slow: f64,
    /// Answer requests with this status instead of serving them (429 carries `Retry-After`,
    /// any other is a server error such as 500 or 503), with an OpenAI-style error body.
    pub status: Option<u16>,
    /// `Retry-After` seconds sent with a 429 (default 1).
    pub retry_after_s: Option<u32>,
    /// Serve, but break the connection after this many output tokens (streaming: after that
    /// many content chunks; not streaming: before the answer).
    pub disconnect_after_tokens: Option<u32>,
    /// How many requests `status` or `disconnect_after_tokens` applies to before they clear
    /// by themselves (none: until changed).
    pub count: Option<u32>,
}

impl Default for Fault {
    fn default() -> Self {
        Self {
            down: false,
            slow: 1.0,
            status: None,
            retry_after_s: None,
            disconnect_after_tokens: None,
            count: None,
        }
    }
}

impl Fault {
    /// Parses `down`, `slow:FACTOR`, `429[:RETRY_AFTER_S]`, `5xx[:STATUS]` (default 500),
    /// `disconnect[:TOKENS]` (default 0) or `none`.
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn parse(spec: &str) -> Result<Fault, String> {
        let mut parts = spec.split(':');
        let kind = parts.next().unwrap_or_default();
        let arg = parts.next();
        if parts.next().is_some() {
            return Err(format!("fault `{spec}`: too many fields"));
        }
        let num = |d: f64| -> Result<f64, String> {
            arg.map_or(Ok(d), |a| {
                a.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| format!("fault `{spec}`: `{a}` is not a non-negative number"))
            })
        };
        let f = Fault::default();
        Ok(match kind {
            "none" => f,
            "down" => Fault { down: true, ..f },
            "slow" => {
                let x = num(2.0)?;
                if x <= 0.0 {
                    return Err(format!("fault `{spec}`: the factor must be positive"));
                }
                Fault { slow: x, ..f }
            }
            "429" => Fault {
                status: Some(429),
                retry_after_s: Some(num(1.0)? as u32),
                ..f
            },
            "5xx" => {
                let s = num(500.0)? as u16;
                if !(500..600).contains(&s) {
                    return Err(format!("fault `{spec}`: {s} is not a 5xx status"));
                }
                Fault {
                    status: Some(s),
                    ..f
                }
            }
            "disconnect" => Fault {
                disconnect_after_tokens: Some(num(0.0)? as u32),
                ..f
            },
            _ => {
                return Err(format!(
                "unknown fault `{spec}` (down, slow:FACTOR, 429[:RETRY_S], 5xx[:STATUS], disconnect[:TOKENS], none)"
            ))
            }
        })
    }
}

/// What a request does when it reaches the server, given the fault in force.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Verdict {
    /// Close the connection without an answer.
    Drop,
    /// Answer with this status (and `Retry-After` seconds for a 429).
    Status(u16, u32),
    /// Serve; break after this many tokens, if set.
    Serve { slow: f64, cut_after: Option<u32> },
}

/// A server's counters since it started (or since [`ServerSet::reset`](super::ServerSet::reset)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStats {
    /// Requests received (answered, faulted or not).
    pub requests: u64,
    /// Requests served to the end.
    pub completed: u64,
    /// Requests answered with an injected status or cut by an injected disconnect.
    pub faulted: u64,
    /// Requests that waited for admission.
    pub queued: u64,
    /// Prompt tokens looked up in the prefix cache (vLLM's `prefix_cache_queries`).
    pub prefix_queries: u64,
    /// Prompt tokens found there (vLLM's `prefix_cache_hits`).
    pub prefix_hits: u64,
    /// Prompt tokens received.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub generation_tokens: u64,
    /// Requests running now.
    pub running: u64,
    /// Requests waiting for admission now.
    pub waiting: u64,
    /// Tokens (input + output) of the running requests now.
    pub running_tokens: u64,
}

struct Waiter {
    tokens: u64,
    tx: oneshot::Sender<Slot>,
}

struct State {
    running: u32,
    running_tokens: u64,
    waiting: VecDeque<Waiter>,
    cache: PrefixCache,
    fault: Fault,
    stats: NodeStats,
}

/// One simulated server.
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) models: Vec<String>,
    pub(crate) spec: NodeSpec,
    /// Tokens the running requests may hold: min(KV memory, max_tokens_in_flight).
    pub(crate) kv_limit: u64,
    /// The set's speed, as f64 bits (shared by every node of a set).
    speed: Arc<AtomicU64>,
    state: Mutex<State>,
    /// Woken whenever the fault changes (the accept loop watches `down`).
    pub(crate) fault_changed: Notify,
}

/// A running request's share of its server; released when dropped.
pub(crate) struct Slot {
    node: Arc<Node>,
    tokens: u64,
    armed: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.armed {
            self.node.release(self.tokens);
        }
    }
}

/// What the model decided when a request was admitted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    /// Prompt tokens served from the prefix cache.
    pub(crate) cached_tokens: u32,
    /// Time to the first token, ms (real time: speed and slow-down applied).
    pub(crate) prefill_ms: f64,
    /// Time per further token, ms (real time).
    pub(crate) per_token_ms: f64,
}

impl Node {
    pub(crate) fn new(
        name: String,
        models: Vec<String>,
        spec: NodeSpec,
        speed: Arc<AtomicU64>,
    ) -> Self {
        let kv = if spec.kv_mb_per_1k_tokens > 0.0 {
            (spec.memory_mb as f64 / spec.kv_mb_per_1k_tokens * 1000.0) as u64
        } else {
            u64::MAX
        };
        let kv_limit = kv.min(spec.max_tokens_in_flight as u64).max(1);
        Self {
            name,
            models,
            kv_limit,
            speed,
            state: Mutex::new(State {
                running: 0,
                running_tokens: 0,
                waiting: VecDeque::new(),
                cache: PrefixCache::for_node(&spec),
                fault: Fault::default(),
                stats: NodeStats::default(),
            }),
            spec,
            fault_changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn speed(&self) -> f64 {
        f64::from_bits(self.speed.load(Ordering::Relaxed))
    }

    pub(crate) fn is_down(&self) -> bool {
        self.lock().fault.down
    }

    pub(crate) fn set_fault(&self, f: Fault) {
        self.lock().fault = f;
        self.fault_changed.notify_waiters();
    }

    pub(crate) fn stats(&self) -> NodeStats {
        let s = self.lock();
        NodeStats {
            running: s.running as u64,
            waiting: s.waiting.len() as u64,
            running_tokens: s.running_tokens,
            ..s.stats
        }
    }

    /// Clears the counters and the prefix cache.
    pub(crate) fn reset(&self) {
        let mut s = self.lock();
        s.stats = NodeStats::default();
        s.cache = PrefixCache::for_node(&self.spec);
    }

    /// Empties the prefix cache (`/flush_cache`).
    pub(crate) fn flush_cache(&self) {
        let mut s = self.lock();
        s.cache = PrefixCache::for_node(&self.spec);
    }

    /// Counts a request in and decides what the fault in force does to it.
    pub(crate) fn verdict(&self) -> Verdict {
        let mut s = self.lock();
        s.stats.requests += 1;
        let f = &mut s.fault;
        if f.down {
            return Verdict::Drop;
        }
        let slow = f.slow;
        let take = |f: &mut Fault| {
            if let Some(c) = f.count.as_mut() {
                *c = c.saturating_sub(1);
                if *c == 0 {
                    let slow = f.slow;
                    *f = Fault {
                        slow,
                        ..Fault::default()
                    };
                }
            }
        };
        if let Some(st) = f.status {
            let retry = f.retry_after_s.unwrap_or(1);
            take(f);
            s.stats.faulted += 1;
            return Verdict::Status(st, retry);
        }
        if let Some(n) = f.disconnect_after_tokens {
            take(f);
            return Verdict::Serve {
                slow,
                cut_after: Some(n),
            };
        }
        Verdict::Serve {
            slow,
            cut_after: None,
        }
    }

    pub(crate) fn count_cut(&self) {
        self.lock().stats.faulted += 1;
    }

    pub(crate) fn count_done(&self, output: u32) {
        let mut s = self.lock();
        s.stats.completed += 1;
        s.stats.generation_tokens += output as u64;
    }

    /// Whether a request of `tokens` may start now.
    fn fits(&self, s: &State, tokens: u64) -> bool {
        s.running < self.spec.max_concurrency.max(1)
            && (s.running == 0 || s.running_tokens + tokens <= self.kv_limit)
    }

    /// Waits for room (FIFO behind earlier waiters), then holds it until the slot drops.
    pub(crate) async fn admit(self: &Arc<Self>, tokens: u64) -> Slot {
        let rx = {
            let mut s = self.lock();
            if s.waiting.is_empty() && self.fits(&s, tokens) {
                s.running += 1;
                s.running_tokens += tokens;
                return Slot {
                    node: self.clone(),
                    tokens,
                    armed: true,
                };
            }
            let (tx, rx) = oneshot::channel();
            s.waiting.push_back(Waiter { tokens, tx });
            s.stats.queued += 1;
            rx
        };
        match rx.await {
            Ok(slot) => slot,
            // The sender is only dropped with the node, which outlives its requests.
            Err(_) => std::future::pending().await,
        }
    }

    fn release(self: &Arc<Self>, tokens: u64) {
        let mut s = self.lock();
        s.running -= 1;
        s.running_tokens -= tokens;
        while let Some(w) = s.waiting.front() {
            if !self.fits(&s, w.tokens) {
                break;
            }
            let w = s.waiting.pop_front().expect("front exists");
            s.running += 1;
            s.running_tokens += w.tokens;
            let slot = Slot {
                node: self.clone(),
                tokens: w.tokens,
                armed: true,
            };
            if let Err(mut slot) = w.tx.send(slot) {
                // The waiter went away: undo here, under the lock, instead of in its drop.
                slot.armed = false;
                s.running -= 1;
                s.running_tokens -= w.tokens;
            }
        }
    }

    /// Plans an admitted request: the prefix cache lookup (then the blocks are made most
    /// recent) and its times, with the batch slowdown of the requests already running.
    pub(crate) fn plan(&self, blocks: &[u64], input: u32, slow: f64) -> Plan {
        let mut s = self.lock();
        let hit = s.cache.matched_prefix(blocks);
        s.cache.touch(blocks);
        let cached = (hit as u64 * BLOCK_TOKENS as u64).min(input as u64) as u32;
        s.stats.prefix_queries += input as u64;
        s.stats.prefix_hits += cached as u64;
        s.stats.prompt_tokens += input as u64;
        let others = s.running.saturating_sub(1) as f64;
        drop(s);
        let u = (others / self.spec.max_concurrency.max(1) as f64).clamp(0.0, 1.0);
        let factor = (1.0 + self.spec.batch_slowdown * u) * slow / self.speed();
        let spec = &self.spec;
        let prefill =
            spec.base_latency_ms + (input - cached) as f64 * 1000.0 / spec.prefill_tokens_per_sec;
        let per_token = 1000.0 / spec.decode_tokens_per_sec;
        let fin = |x: f64| if x.is_finite() { x.max(0.0) } else { 0.0 };
        Plan {
            cached_tokens: cached,
            prefill_ms: fin(prefill * factor),
            per_token_ms: fin(per_token * factor),
        }
    }

    /// The KV share the running requests hold, 0..1.
    pub(crate) fn kv_usage(&self) -> f64 {
        let s = self.lock();
        (s.running_tokens as f64 / self.kv_limit as f64).min(1.0)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn fault_specs_parse() {
        assert!(Fault::parse("down").unwrap().down);
        assert_eq!(Fault::parse("slow:3").unwrap().slow, 3.0);
        let f = Fault::parse("429:2").unwrap();
        assert_eq!((f.status, f.retry_after_s), (Some(429), Some(2)));
        assert_eq!(Fault::parse("5xx").unwrap().status, Some(500));
        assert_eq!(Fault::parse("5xx:503").unwrap().status, Some(503));
        assert_eq!(
            Fault::parse("disconnect:4")
                .unwrap()
                .disconnect_after_tokens,
            Some(4)
        );
        assert_eq!(Fault::parse("none").unwrap(), Fault::default());
        for bad in ["slow:0", "5xx:404", "nope", "slow:x", "429:1:2"] {
            assert!(Fault::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn admission_waits_for_room_in_order() {
        let spec = NodeSpec::new("n").max_concurrency(1);
        let speed = Arc::new(AtomicU64::new(1f64.to_bits()));
        let n = Arc::new(Node::new("n".into(), vec![], spec, speed));
        let a = n.admit(10).await;
        let n2 = n.clone();
        let b = tokio::spawn(async move { n2.admit(10).await });
        tokio::task::yield_now().await;
        assert_eq!((n.stats().running, n.stats().waiting), (1, 1));
        drop(a);
        let b = b.await.unwrap();
        assert_eq!((n.stats().running, n.stats().waiting), (1, 0));
        // A waiter that goes away gives its turn back.
        let n3 = n.clone();
        let c = tokio::spawn(async move { n3.admit(10).await });
        tokio::task::yield_now().await;
        c.abort();
        let _ = c.await;
        drop(b);
        let s = n.stats();
        assert_eq!((s.running, s.waiting, s.running_tokens), (0, 0, 0));
    }
}
