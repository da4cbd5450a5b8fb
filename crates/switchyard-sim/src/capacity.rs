//! The fleet's modelled capacity for a workload, as a fluid model: how busy the fleet is
//! offered to be, the best balance its capability constraints allow, and the default load
//! rule of `switchyard simulate`.
//!
//! # The fluid model
//! * A task's **work on node `n`** is its unloaded service time there (no cache hit); with
//!   KV admission also that time × the slots its tokens fill in KV memory
//!   (`tokens × max_concurrency / KV tokens`: a long prompt fills the KV memory before the
//!   sequence slots). A set of tasks keeps a node as busy as the larger of the two sums,
//!   as the simulator measures utilisation.
//! * **Water-filling**: each capability class's work is poured over the nodes that can
//!   serve it, as evenly by utilisation as the constraints allow. A set `S` of classes
//!   spread over the nodes serving any of them, each node taking work in proportion to its
//!   rate for S's mix (`slots × span / S's work on it`), keeps them all at one level; the
//!   densest set is the busiest level, those nodes take exactly that set's work, and the
//!   rest is filled the same way (nodes no class can use stay idle). With one class, or
//!   nodes whose speeds differ by one factor, this is the exact fractional optimum; with
//!   mixes the nodes serve at different relative speeds it is an approximation.
//! * The **offered utilisation** is the mean over nodes of that allocation's utilisation;
//!   the **balance bound** is its busiest node over the mean, minus one: the deviation no
//!   router can beat in the fluid limit (batch slowdown, prefix hits and burstiness are left
//!   out, so a real run can land a little either side of it).
use crate::workload::{SimConfig, Workload};

/// Fleet utilisation the default load aims at: the middle of 50–80 % busy.
pub const DEFAULT_TARGET_UTILIZATION: f64 = 0.65;

/// Most capability classes the water-filling enumerates subsets of (2^k sets); beyond it
/// the classes are merged into one (the bound then ignores the constraints).
const MAX_CLASSES: usize = 16;

/// The fluid model of a workload on its fleet (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct FluidCapacity {
    /// Per node, its utilisation under the most balanced allocation.
    pub node_utilization: Vec<f64>,
    /// Mean of `node_utilization`: the work offered over the fleet's capacity.
    pub offered_utilization: f64,
    /// The part of it in sequence slots (without the KV share), which sets the batch
    /// slowdown.
    pub offered_sequences: f64,
    /// The best balance deviation the capability constraints allow.
    pub balance_bound: f64,
}

/// The fluid model of `w` (run with `cfg`'s KV admission).
pub fn fluid_capacity(w: &Workload, cfg: &SimConfig) -> FluidCapacity {
    let nodes = &w.fleet.nodes;
    let n = nodes.len();
    let zero = FluidCapacity {
        node_utilization: vec![0.0; n],
        offered_utilization: 0.0,
        offered_sequences: 0.0,
        balance_bound: 0.0,
    };
    let first = w.tasks.first().map_or(0, |t| t.arrival_ns);
    let last = w.tasks.last().map_or(0, |t| t.arrival_ns);
    let span_ms = last.saturating_sub(first) as f64 / 1e6;
    if n == 0 || span_ms <= 0.0 {
        return zero;
    }
    let kv: Vec<f64> = nodes
        .iter()
        .map(|s| {
            let by_mem = if s.kv_mb_per_1k_tokens > 0.0 {
                s.memory_mb as f64 / s.kv_mb_per_1k_tokens * 1000.0
            } else {
                f64::INFINITY
            };
            by_mem.min(s.max_tokens_in_flight as f64)
        })
        .collect();
    // A task's (slot-time, KV slot-time) on node k: its unloaded service time, and that
    // times the share of the node's slots its tokens fill in KV memory. A node is as busy as
    // the larger of the two sums (as the simulator measures it), not the sum of the larger.
    let work = |t: &crate::workload::SimTask, k: usize| {
        let s = &nodes[k];
        let conc = s.max_concurrency.max(1) as f64;
        let time = s.service_time_ms(t.task.input_tokens, t.task.output_tokens);
        let kv_slots = if cfg.kv_admission && kv[k] > 0.0 {
            (t.task.total_tokens() as f64 * conc / kv[k]).min(conc)
        } else {
            0.0
        };
        (time, time * kv_slots)
    };
    let add = |a: (f64, f64), b: (f64, f64)| (a.0 + b.0, a.1 + b.1);
    // Per class, its (slot-time, KV slot-time) sums on every node.
    let mut sums = vec![vec![(0.0, 0.0); n]; w.classes.len()];
    for t in &w.tasks {
        if !w.classes[t.class].is_empty() {
            for (k, s) in sums[t.class].iter_mut().enumerate() {
                *s = add(*s, work(t, k));
            }
        }
    }
    let mut classes: Vec<Class> = w
        .classes
        .iter()
        .zip(sums)
        .filter(|(c, s)| !c.is_empty() && s.iter().any(|x| x.0 > 0.0))
        .map(|(c, s)| Class {
            work: s,
            nodes: c.clone(),
        })
        .collect();
    if classes.len() > MAX_CLASSES {
        let mut all = Class {
            work: vec![(0.0, 0.0); n],
            nodes: (0..n).collect(),
        };
        for c in &classes {
            for (a, b) in all.work.iter_mut().zip(&c.work) {
                *a = add(*a, *b);
            }
        }
        classes = vec![all];
    }
    let slot_time: Vec<f64> = nodes
        .iter()
        .map(|s| s.max_concurrency as f64 * span_ms)
        .collect();
    let (levels, seq) = water_fill(&classes, &slot_time);
    let mean = levels.iter().sum::<f64>() / n as f64;
    FluidCapacity {
        offered_sequences: seq.iter().sum::<f64>() / n as f64,
        balance_bound: switchyard::metrics::balance_deviation(&levels).max(0.0),
        offered_utilization: mean,
        node_utilization: levels,
    }
}

/// One capability class for the water-filling: its work on every node (slot-time and KV
/// slot-time sums) and the nodes that can serve it.
struct Class {
    work: Vec<(f64, f64)>,
    nodes: Vec<usize>,
}

/// Utilisation per node of the most balanced fractional allocation of `classes` over nodes
/// offering `slot_time` (slots × span). A set `S` of classes spread over the open nodes that
/// serve it, each node taking work in proportion to its rate for `S`, keeps them all at
/// `1 / Σ_k slot_time_k / work_S,k`, where `work_S,k` is the larger of S's two sums on `k`:
/// the densest such set is the busiest level.
fn water_fill(classes: &[Class], slot_time: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let n = slot_time.len();
    let mut level = vec![0.0; n];
    let mut seq_level = vec![0.0; n];
    let mut open_nodes = vec![true; n];
    let mut left: Vec<usize> = (0..classes.len()).collect();
    while !left.is_empty() {
        let mut best: Option<(f64, u32, Vec<usize>, Vec<usize>)> = None;
        for mask in 1u32..(1u32 << left.len()) {
            let set: Vec<usize> = (0..left.len())
                .filter(|b| mask & (1 << b) != 0)
                .map(|b| left[b])
                .collect();
            let mut reach = vec![false; n];
            for &c in &set {
                for &k in &classes[c].nodes {
                    reach[k] |= open_nodes[k];
                }
            }
            let nodes: Vec<usize> = (0..n).filter(|&k| reach[k]).collect();
            let rate: f64 = nodes
                .iter()
                .map(|&k| {
                    let (seq, kv) = mix(classes, &set, k);
                    let wk = f64::max(seq, kv);
                    if wk > 0.0 {
                        slot_time[k] / wk
                    } else {
                        0.0
                    }
                })
                .sum();
            if rate <= 0.0 {
                continue;
            }
            let density = 1.0 / rate;
            let better = best.as_ref().is_none_or(|(d, m, _, _)| {
                density > *d * (1.0 + 1e-12)
                    || (density >= *d && mask.count_ones() > m.count_ones())
            });
            if better {
                best = Some((density, mask, set, nodes));
            }
        }
        let Some((density, _, set, nodes)) = best else {
            break;
        };
        for k in nodes {
            let (seq, kv) = mix(classes, &set, k);
            level[k] = density;
            seq_level[k] = if seq.max(kv) > 0.0 {
                density * seq / seq.max(kv)
            } else {
                0.0
            };
            open_nodes[k] = false;
        }
        left.retain(|c| !set.contains(c));
    }
    (level, seq_level)
}

/// The (slot-time, KV slot-time) of the classes of `set` on node `k` (all of them, whether
/// `k` serves them or not: the node's speed for that mix of work).
fn mix(classes: &[Class], set: &[usize], k: usize) -> (f64, f64) {
    set.iter().fold((0.0, 0.0), |a, &c| {
        (a.0 + classes[c].work[k].0, a.1 + classes[c].work[k].1)
    })
}

/// The load (arrival-rate multiplier) at which `w`, built at load 1, offers the fleet
/// `target` utilisation: the offered work, inflated by the nodes' mean batch slowdown `b`
/// at that utilisation (`busy = offered × (1 + b × busy)`), is `target`. `None` when the
/// trace has no arrival span or no work.
pub fn load_for_utilization(w: &Workload, cfg: &SimConfig, target: f64) -> Option<f64> {
    let f = fluid_capacity(w, cfg);
    let (busy1, seq1) = (
        f.offered_utilization / cfg.load,
        f.offered_sequences / cfg.load,
    );
    let n = w.fleet.nodes.len();
    if !(busy1 > 0.0 && busy1.is_finite() && target > 0.0) || n == 0 {
        return None;
    }
    let b = (w.fleet.nodes.iter().map(|s| s.batch_slowdown).sum::<f64>() / n as f64).max(0.0);
    // At load L the sequences busy solve seq = L × seq1 × (1 + b × seq), and the fleet is
    // L × busy1 × (1 + b × seq) busy; that grows with L, so bisect.
    let busy_at = |l: f64| {
        let x = l * seq1;
        let seq = if b * x >= 1.0 {
            f64::INFINITY
        } else {
            x / (1.0 - b * x)
        };
        l * busy1 * (1.0 + b * seq)
    };
    let (mut lo, mut hi) = (0.0, target / busy1);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if busy_at(mid) < target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(0.5 * (lo + hi))
}

/// Probes [`calibrate_load`] makes at most.
pub const CALIBRATION_PROBES: usize = 5;
/// How close to the target the measured median must come for [`calibrate_load`] to stop.
pub const CALIBRATION_TOLERANCE: f64 = 0.025;

/// What [`calibrate_load`] chose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibratedLoad {
    /// The load chosen (rounded to hundredths, as `--load` would be written).
    pub load: f64,
    /// The compared policies' median measured busy share there (`arrival_utilization`).
    pub median_busy: f64,
    /// Replays it took (each runs every policy once).
    pub probes: usize,
}

/// The load at which the compared `policies` measure, as their median, `target` busy while
/// the requests arrive: starting from `first` (the fluid model's estimate, see
/// [`load_for_utilization`]), each probe replays every policy at the load (`build` makes the
/// workload for a config) and scales the load by target / measured, until the median is
/// within [`CALIBRATION_TOLERANCE`] or [`CALIBRATION_PROBES`] replays are spent; the probe
/// closest to the target wins. The fluid model leaves out batching, prefix hits and how
/// each policy places work, so on a trace whose long requests only some nodes can serve the
/// fleet it promises 65 % busy measures 37-66 % by policy (median 45 %).
///
/// # Errors
/// Whatever `build` or the replay returns.
pub fn calibrate_load(
    first: f64,
    policies: &[&str],
    cfg: &SimConfig,
    target: f64,
    build: &mut dyn FnMut(&SimConfig) -> Result<Workload, String>,
) -> Result<CalibratedLoad, String> {
    let round = |l: f64| ((l * 100.0).round() / 100.0).max(0.01);
    let mut load = round(first);
    let mut best = CalibratedLoad {
        load,
        median_busy: f64::NAN,
        probes: 0,
    };
    for probe in 1..=CALIBRATION_PROBES {
        best.probes = probe;
        let at = SimConfig {
            load,
            spike: None,
            ..cfg.clone()
        };
        let w = build(&at)?;
        let outcomes = crate::event::compare_outcomes(&w, policies, &at, &mut |_, _| {})
            .map_err(|e| e.to_string())?;
        let mut busy: Vec<f64> = outcomes
            .iter()
            .map(|o| o.report.arrival_utilization)
            .collect();
        busy.sort_by(f64::total_cmp);
        let median = match busy.len() {
            0 => 0.0,
            n if n % 2 == 1 => busy[n / 2],
            n => 0.5 * (busy[n / 2 - 1] + busy[n / 2]),
        };
        // The first probe, or one closer to the target.
        if best.median_busy.is_nan() || (median - target).abs() < (best.median_busy - target).abs()
        {
            best.load = load;
            best.median_busy = median;
        }
        if (median - target).abs() <= CALIBRATION_TOLERANCE || median.is_nan() || median <= 0.0 {
            break;
        }
        let next = round(load * target / median);
        if next == load {
            break;
        }
        load = next;
    }
    Ok(best)
}

#[cfg(test)]
mod test {
    use super::*;

    fn class(work: f64, nodes: &[usize], of: usize) -> Class {
        Class {
            work: vec![(work, 0.0); of],
            nodes: nodes.to_vec(),
        }
    }

    #[test]
    fn water_filling_balances_within_the_constraints() {
        // Two equal nodes, one class on both: equal levels, no deviation.
        let l = water_fill(&[class(10.0, &[0, 1], 2)], &[10.0, 10.0]).0;
        assert_eq!(l, vec![0.5, 0.5]);
        // A class only node 0 serves, heavier than half: node 0 takes it all, the other
        // class goes to node 1.
        let l = water_fill(
            &[class(15.0, &[0], 2), class(1.0, &[0, 1], 2)],
            &[10.0, 10.0],
        )
        .0;
        assert_eq!(l, vec![1.5, 0.1]);
        // A light restricted class: both share equally.
        let l = water_fill(
            &[class(2.0, &[0], 2), class(8.0, &[0, 1], 2)],
            &[10.0, 10.0],
        )
        .0;
        assert_eq!(l, vec![0.5, 0.5]);
        // A node no class can use stays idle.
        let l = water_fill(&[class(4.0, &[0], 2)], &[10.0, 10.0]).0;
        assert_eq!(l, vec![0.4, 0.0]);
        assert!((switchyard::metrics::balance_deviation(&l) - 1.0).abs() < 1e-12);
        // A node twice as slow for the class takes half the work at the same level.
        let c = Class {
            work: vec![(10.0, 0.0), (20.0, 0.0)],
            nodes: vec![0, 1],
        };
        let l = water_fill(&[c], &[10.0, 10.0]).0;
        assert!(
            (l[0] - l[1]).abs() < 1e-12 && (l[0] - 1.0 / 1.5).abs() < 1e-12,
            "{l:?}"
        );
    }
}
