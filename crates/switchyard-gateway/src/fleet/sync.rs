//! The fleet's control task: every sync interval, one round trip publishes this replica's
//! load and health changes and reads the others' (one Lua script), then tenant slices are
//! drawn from the global GCRA (another). Nothing here is on a request's path.
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use switchyard::health::IncidentKind;
use switchyard::spec::{HealthAwareRouting, HealthIncident};
use switchyard::HealthStatus;
use tokio::sync::oneshot;

use super::{unix_ms, FleetMode, FleetShared};
use crate::Shared;

/// Publishes this replica's load and health events, reads everyone's; one round trip.
///
/// ARGV: prefix, replica, ttl_ms, load ("node\tin_flight\ttokens\tfailed\tserved\n"...,
/// the last two the attempts that failed on the node since the last sync and the tasks it
/// completed successfully meanwhile), then events
/// ("node\tkind\tpause_ms"). Returns {now_ms, replicas alive, {replica, load}..., the
/// health hash}. Time is Redis's, so staleness needs no synchronised clocks.
const SYNC_LUA: &str = r#"
local p, me, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', p .. ':load:' .. me, now .. '\n' .. ARGV[4], 'PX', ttl)
redis.call('ZADD', p .. ':replicas', now, me)
redis.call('ZREMRANGEBYSCORE', p .. ':replicas', '-inf', now - ttl)
for i = 5, #ARGV do
  local node, kind, pause = string.match(ARGV[i], '^(.-)\t(.-)\t(.-)$')
  if node then
    local ver = redis.call('INCR', p .. ':health:ver')
    redis.call('HSET', p .. ':health', node,
      ver .. ' ' .. kind .. ' ' .. me .. ' ' .. (now + tonumber(pause)) .. ' ' .. now)
    redis.call('PEXPIRE', p .. ':health', 3600000)
  end
end
local members = redis.call('ZRANGE', p .. ':replicas', 0, -1)
local loads = {}
for _, m in ipairs(members) do
  if m ~= me then
    local v = redis.call('GET', p .. ':load:' .. m)
    if v then
      table.insert(loads, m)
      table.insert(loads, v)
    end
  end
end
return {now, #members, loads, redis.call('HGETALL', p .. ':health')}
"#;

/// The global GCRA of one tenant: grants up to ARGV[3] tokens (all that fit the burst,
/// possibly fewer) or, for a negative ARGV[3], takes unspent tokens back. ARGV[1]: µs per
/// token, ARGV[2]: burst in µs. Returns the tokens granted.
const GCRA_LUA: &str = r#"
local per, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local grant = want
if want > 0 then
  grant = math.min(want, math.floor((burst - (tat - now)) / per))
  if grant <= 0 then return 0 end
end
tat = tat + grant * per
if tat < now then tat = now end
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
return grant
"#;

/// Failed attempts on a node fleet-wide within one sync interval, with no success, that
/// eject it everywhere (the router's own default streak).
const SHARED_STREAK: u64 = 3;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Event {
    Failed,
    Recovered,
    Paused(u64),
}

impl Event {
    fn encode(self, node: &str) -> String {
        match self {
            Event::Failed => format!("{node}\tfailed\t0"),
            Event::Recovered => format!("{node}\trecovered\t0"),
            Event::Paused(ms) => format!("{node}\tpaused\t{ms}"),
        }
    }
}

#[derive(Default)]
struct State {
    conn: Option<ConnectionManager>,
    /// The verdict of each node at the last look, to see local changes.
    seen: HashMap<String, HealthStatus>,
    /// A verdict this replica was told to take: its own change to it is not republished.
    expect: HashMap<String, HealthStatus>,
    /// Local changes not yet published.
    pending: HashMap<String, Event>,
    /// The newest health version applied (or published) per node.
    applied: HashMap<String, u64>,
    /// Nodes that hold an external load in the router.
    external: HashMap<String, (u64, u64)>,
    /// Failed attempts and successes per node at the last sync (for the deltas published).
    counts: HashMap<String, (u64, u64)>,
    /// The publication time of each remote replica's load last read (a load read twice
    /// is counted once in the shared failure streak).
    remote_ts: HashMap<String, i64>,
    /// When each tenant last drew a slice.
    drawn: HashMap<u32, Instant>,
    last_ok: Option<Instant>,
    /// The router's health report, taken before each sync.
    health: Vec<switchyard::NodeHealth>,
    /// Local-share mode: the share of each rate this replica earns, and the last refill.
    share: f64,
    refilled: Option<Instant>,
    synced_once: bool,
    down_logged: bool,
}

/// The control task: syncs every interval until the gateway closes. `ready` fires after
/// the first attempt (warm start: the shared health and load are applied by then).
pub(crate) async fn run(shared: Weak<Shared>, fleet: Arc<FleetShared>, ready: oneshot::Sender<()>) {
    let iv = fleet.settings.interval();
    let mut ready = Some(ready);
    let mut st = State::default();
    let mut pauses = fleet
        .pauses_rx
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let mut tick = tokio::time::interval(iv);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if fleet.stop.load(Relaxed) {
            return;
        }
        let Some(sh) = shared.upgrade() else { return };
        if let Some(rx) = pauses.as_mut() {
            while let Ok((node, p)) = rx.try_recv() {
                st.pending.insert(
                    node,
                    Event::Paused(p.as_millis().min(u64::MAX as u128) as u64),
                );
            }
        }
        local_changes(&sh, &mut st);
        // One interval at most (a sync never piles onto the next), 50 ms at least.
        let limit = iv.max(Duration::from_millis(50));
        let result = match tokio::time::timeout(limit, sync_once(&sh, &fleet, &mut st)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", limit.as_millis())),
        };
        match result {
            Ok(()) => up(&fleet, &mut st),
            Err(e) => down(&sh, &fleet, &mut st, &e),
        }
        refill_local(&fleet, &mut st);
        if let Some(tx) = ready.take() {
            fleet.ready.store(true, Relaxed);
            let _ = tx.send(());
        }
    }
}

/// Local verdict changes since the last look become events to publish, unless they are a
/// remote verdict this replica was told to take.
fn local_changes(sh: &Shared, st: &mut State) {
    st.health = sh.router.node_health();
    for h in &st.health {
        let prev = st.seen.insert(h.node.clone(), h.status);
        let Some(prev) = prev else { continue };
        if prev == h.status {
            continue;
        }
        if st.expect.get(&h.node) == Some(&h.status) {
            st.expect.remove(&h.node);
            continue;
        }
        let ev = match (prev, h.status) {
            (_, HealthStatus::Failed) => Event::Failed,
            (HealthStatus::Failed, _) => Event::Recovered,
            _ => continue,
        };
        st.pending.insert(h.node.clone(), ev);
    }
}

async fn connection(fleet: &FleetShared, st: &mut State) -> redis::RedisResult<ConnectionManager> {
    if let Some(c) = &st.conn {
        return Ok(c.clone());
    }
    let iv = fleet.settings.interval().max(Duration::from_millis(50));
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(iv)
        .set_response_timeout(iv)
        .set_number_of_retries(1);
    let c = ConnectionManager::new_with_config(fleet.client.clone(), cfg).await?;
    st.conn = Some(c.clone());
    Ok(c)
}

type SyncReply = (i64, i64, Vec<String>, Vec<String>);

async fn sync_once(sh: &Shared, fleet: &FleetShared, st: &mut State) -> redis::RedisResult<()> {
    let mut conn = connection(fleet, st).await?;
    let s = &fleet.settings;
    let ttl_ms = 3 * s.sync_interval_ms.max(10);
    // Failed attempts on each node and its successes since the last sync.
    let errors: HashMap<&str, u64> = st
        .health
        .iter()
        .map(|h| (h.node.as_str(), h.metrics.errors))
        .collect();
    let mut delta: HashMap<String, (u64, u64)> = HashMap::new();
    let mut load = String::new();
    for m in sh.router.node_metrics() {
        if m.draining {
            continue;
        }
        let now = (
            errors.get(m.name.as_str()).copied().unwrap_or(0),
            m.outcomes[switchyard::Outcome::Success],
        );
        let prev = st.counts.insert(m.name.clone(), now).unwrap_or(now);
        let d = (now.0.saturating_sub(prev.0), now.1.saturating_sub(prev.1));
        load.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\n",
            m.name, m.in_flight, m.tokens_in_flight, d.0, d.1
        ));
        delta.insert(m.name, d);
    }
    let events: Vec<(String, Event)> = st.pending.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let script = redis::Script::new(SYNC_LUA);
    let mut inv = script.prepare_invoke();
    inv.arg(&s.key_prefix)
        .arg(&s.replica)
        .arg(ttl_ms)
        .arg(&load);
    for (node, ev) in &events {
        inv.arg(ev.encode(node));
    }
    let sent = Instant::now();
    let (now_ms, alive, loads, health): SyncReply = inv.invoke_async(&mut conn).await?;
    let rtt = sent.elapsed();
    // Published: they are in Redis now.
    for (node, ev) in &events {
        if st.pending.get(node) == Some(ev) {
            st.pending.remove(node);
        }
        fleet.health_published.fetch_add(1, Relaxed);
    }
    fleet.replicas.store(alive.max(1) as u64, Relaxed);

    // The shared load view: the sum over the other replicas, per node.
    let mut sum: HashMap<&str, (u64, u64)> = HashMap::new();
    // The fleet's failures and successes per node over the last interval, ours included.
    let mut streak: HashMap<String, (u64, u64)> = delta;
    let mut oldest = now_ms;
    for pair in loads.chunks_exact(2) {
        let mut lines = pair[1].lines();
        let ts: i64 = lines.next().and_then(|l| l.parse().ok()).unwrap_or(now_ms);
        oldest = oldest.min(ts);
        fleet.push_staleness((now_ms - ts).clamp(0, u32::MAX as i64) as u32);
        let fresh = st.remote_ts.insert(pair[0].clone(), ts) != Some(ts);
        for l in lines {
            let mut f = l.split('\t');
            let (Some(node), Some(a), Some(b)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let e = sum.entry(node).or_default();
            e.0 += a.parse::<u64>().unwrap_or(0);
            e.1 += b.parse::<u64>().unwrap_or(0);
            if fresh {
                let failed = f.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                let served = f.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                let s = streak.entry(node.to_string()).or_default();
                s.0 += failed;
                s.1 += served;
            }
        }
    }
    st.remote_ts
        .retain(|r, _| loads.chunks_exact(2).any(|p| &p[0] == r));
    let age_ms = (now_ms - oldest).max(0) as u64 + rtt.as_millis() as u64 / 2;
    fleet
        .view_ts_ms
        .store(unix_ms().saturating_sub(age_ms).max(1), Relaxed);
    fleet
        .remote_in_flight
        .store(sum.values().map(|v| v.0).sum(), Relaxed);
    for spec in sh.router.node_specs() {
        let v = sum.get(spec.name.as_str()).copied().unwrap_or((0, 0));
        let had = st.external.get(&spec.name).copied().unwrap_or((0, 0));
        if v != had && sh.router.set_external_load(&spec.name, v.0, v.1).is_ok() {
            st.external.insert(spec.name.clone(), v);
        }
    }

    // Shared health: apply what others published since we last looked.
    for pair in health.chunks_exact(2) {
        let (node, val) = (&pair[0], &pair[1]);
        let mut f = val.split(' ');
        let (Some(ver), Some(kind), Some(origin), Some(until)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let (Ok(ver), Ok(until)) = (ver.parse::<u64>(), until.parse::<i64>()) else {
            continue;
        };
        if st.applied.get(node).is_some_and(|&v| v >= ver) {
            continue;
        }
        st.applied.insert(node.clone(), ver);
        if origin == s.replica {
            continue;
        }
        let status = st.seen.get(node).copied();
        let applied = match kind {
            "failed" if status != Some(HealthStatus::Failed) => {
                st.expect.insert(node.clone(), HealthStatus::Failed);
                incident(sh, node, IncidentKind::Down)
            }
            "recovered" if status == Some(HealthStatus::Failed) => {
                st.expect.insert(node.clone(), HealthStatus::Healthy);
                incident(sh, node, IncidentKind::Recovered)
            }
            "paused" if until > now_ms => sh
                .router
                .pause_node(node, Duration::from_millis((until - now_ms) as u64))
                .is_ok(),
            _ => false,
        };
        if applied {
            fleet.health_applied.fetch_add(1, Relaxed);
            if st.synced_once {
                tracing::info!(node = %node, verdict = kind, from = origin, "fleet: applied a remote health verdict");
            }
        }
    }

    // A shared failure streak: failures of a node fleet-wide in one interval, with no
    // success anywhere, reaching the ejection streak eject it on every replica at once
    // (each sees the same sums), so a dead node costs the fleet its first few failures.
    if st.synced_once {
        for (node, (failed, served)) in &streak {
            let out = st.seen.get(node) == Some(&HealthStatus::Failed);
            if !out
                && *served == 0
                && *failed >= SHARED_STREAK
                && incident(sh, node, IncidentKind::Down)
            {
                st.seen.insert(node.clone(), HealthStatus::Failed);
                fleet.health_applied.fetch_add(1, Relaxed);
                tracing::warn!(
                    node = %node,
                    failures = failed,
                    "fleet: node ejected on the fleet's shared failure streak"
                );
            }
        }
    }

    // Tenant slices: top each credit up to a slice, give back what sat unspent too long.
    let gcra = redis::Script::new(GCRA_LUA);
    for b in &fleet.buckets {
        let slice = (b.rate * s.slice_ms as f64 / 1e3).ceil().max(1.0) as i64;
        let per_us = 1e6 / b.rate;
        let burst_us = (b.burst_s * 1e6).max(per_us * slice as f64);
        let key = format!("{}:gcra:{}", s.key_prefix, b.tenant);
        let stale = st
            .drawn
            .get(&b.tenant)
            .is_none_or(|t| t.elapsed() > Duration::from_millis(s.slice_ttl_ms));
        if stale {
            let back = b.credit.swap(0, Relaxed);
            if back > 0 {
                let _: i64 = gcra
                    .key(&key)
                    .arg(per_us)
                    .arg(burst_us)
                    .arg(-back)
                    .invoke_async(&mut conn)
                    .await?;
                fleet.slice_tokens.fetch_sub(back, Relaxed);
            }
        }
        if b.credit.load(Relaxed) < slice {
            let got: i64 = gcra
                .key(&key)
                .arg(per_us)
                .arg(burst_us)
                .arg(slice)
                .invoke_async(&mut conn)
                .await?;
            if got > 0 {
                b.credit.fetch_add(got, Relaxed);
                fleet.slice_tokens.fetch_add(got, Relaxed);
                st.drawn.insert(b.tenant, Instant::now());
            }
        }
    }
    Ok(())
}

fn incident(sh: &Shared, node: &str, kind: IncidentKind) -> bool {
    sh.router
        .trigger_failover(&HealthIncident {
            node: node.to_string(),
            kind,
        })
        .is_ok()
}

/// Local-share mode: each limited tenant's credit earns this replica's share of the rate
/// for the time since the last refill, up to its share of the burst (at least a slice).
fn refill_local(fleet: &FleetShared, st: &mut State) {
    let now = Instant::now();
    let last = st.refilled.replace(now);
    if fleet.mode() != FleetMode::LocalShare {
        return;
    }
    let Some(last) = last else { return };
    let dt = now.duration_since(last).as_secs_f64();
    let share = st.share;
    for b in &fleet.buckets {
        let rate = b.rate * share;
        let cap = (rate * b.burst_s).max(rate * fleet.settings.slice_ms as f64 / 1e3) as i64;
        let earned = (rate * dt) as i64;
        let _ = b
            .credit
            .fetch_update(Relaxed, Relaxed, |c| Some((c + earned).min(cap.max(c))));
    }
}

fn up(fleet: &FleetShared, st: &mut State) {
    fleet.syncs_ok.fetch_add(1, Relaxed);
    fleet.redis_up.store(true, Relaxed);
    st.last_ok = Some(Instant::now());
    st.synced_once = true;
    if fleet.mode() != FleetMode::Shared {
        // The slices take over again; credit earned locally meanwhile is spent first.
        fleet.set_mode(FleetMode::Shared);
        tracing::info!(
            replica = %fleet.settings.replica,
            "fleet: Redis reachable; shared limits, load and health resumed"
        );
    }
    st.down_logged = false;
}

fn down(sh: &Shared, fleet: &FleetShared, st: &mut State, error: &str) {
    fleet.syncs_failed.fetch_add(1, Relaxed);
    let s = &fleet.settings;
    // One slow or failed sync is not an outage: within three intervals of the last good one
    // the slices in hand are still valid (they live four) and the others' load has not
    // expired, so nothing changes yet and the replica does not flap between modes on a
    // loaded host. A replica that never reached Redis falls back at once.
    let grace = Duration::from_millis(3 * s.sync_interval_ms);
    if st.last_ok.is_some_and(|t| t.elapsed() <= grace) {
        tracing::debug!(replica = %s.replica, error, "fleet: a sync failed; within the grace");
        return;
    }
    fleet.redis_up.store(false, Relaxed);
    if fleet.mode() == FleetMode::Shared {
        let replicas = fleet.replicas.load(Relaxed).max(1);
        let share = s.local_share.unwrap_or(1.0 / replicas as f64);
        let mode = if s.fail_closed {
            FleetMode::FailClosed
        } else {
            FleetMode::LocalShare
        };
        st.share = share;
        fleet.set_mode(mode);
        tracing::warn!(
            replica = %s.replica,
            error,
            mode = mode.name(),
            share,
            "fleet: Redis unreachable; tenant limits are local-only"
        );
        st.down_logged = true;
    } else if !st.down_logged {
        tracing::warn!(replica = %s.replica, error, "fleet: Redis still unreachable");
        st.down_logged = true;
    }
    // The others' load expires as it would in Redis (three intervals, past by now); health
    // stays as is.
    for (node, v) in st.external.iter_mut() {
        if *v != (0, 0) && sh.router.set_external_load(node, 0, 0).is_ok() {
            *v = (0, 0);
        }
    }
    fleet.view_ts_ms.store(0, Relaxed);
    fleet.remote_in_flight.store(0, Relaxed);
}
