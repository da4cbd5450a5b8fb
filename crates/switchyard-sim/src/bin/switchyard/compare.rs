//! `switchyard simulate` (the default command): replay a trace in virtual time through the
//! discrete-event simulator under several routing policies (the real router among them),
//! compare them, and measure how fast the router decides and the simulator replays.
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Instant;

use switchyard_sim::{
    calibrate_load, compare_outcomes, load_for_utilization, open_trace, GatewayModel, Report,
    SimConfig, Spike, SpikeReport, Workload, DEFAULT_TARGET_UTILIZATION, POLICY_NAMES,
    SPIKE_HEADER,
};

use crate::progress::Progress;
use crate::{Error, SimArgs};

pub fn run(args: &SimArgs) -> Result<(), Error> {
    let policies: Vec<&str> = if args.policy.is_empty() {
        POLICY_NAMES.to_vec()
    } else {
        args.policy.iter().map(|p| p.trim()).collect()
    };
    if let Some(bad) = policies.iter().find(|p| !POLICY_NAMES.contains(p)) {
        return Err(switchyard_sim::SimError::UnknownPolicy(bad.to_string()).into());
    }
    if let Some(p) = (1..policies.len())
        .find(|&i| policies[..i].contains(&policies[i]))
        .map(|i| policies[i])
    {
        return Err(format!("--policy names `{p}` twice").into());
    }
    // Fail before the run, not after it: the outputs must be writable.
    if let Some(path) = &args.json {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot write into {}: {e}", dir.display()))?;
    }
    let mut cfg = SimConfig {
        load: args.load.unwrap_or(1.0),
        seed: args.seed,
        base_capability: args.base_capability.clone(),
        prefix_cache: !args.no_prefix_cache,
        kv_admission: !args.no_kv_admission,
        slo_in_task: !args.no_slo_constraint,
        spike: args.spike.as_deref().map(Spike::parse).transpose()?,
        gateway: args.gateway.map(Into::into).unwrap_or_default(),
    };
    if !(cfg.load.is_finite() && cfg.load > 0.0) {
        return Err(switchyard_sim::SimError::InvalidLoad(cfg.load).into());
    }
    let (name, rows) = open_trace(args.trace.as_deref())?;
    let fleet_name = || {
        args.config
            .as_deref()
            .map_or_else(|| "built-in".to_string(), |p| p.display().to_string())
    };
    let started = Instant::now();
    let fleet = crate::fleet(args.config.as_deref())?;
    let build = |cfg: &SimConfig| {
        Workload::new(name.clone(), &rows, fleet.clone(), cfg).map_err(|e| {
            format!(
                "the fleet ({}) cannot run this trace: {e} (every task requires `{}`, and \
                 inputs over 4096 tokens also `long-context`)",
                fleet_name(),
                cfg.base_capability
            )
        })
    };
    let mut workload = build(&cfg)?;
    // Without --load: the load at which the compared policies measure, as their median,
    // DEFAULT_TARGET_UTILIZATION busy, starting from the fluid model's estimate.
    let load_rule = if args.load.is_none() {
        let flat = SimConfig {
            spike: None,
            ..cfg.clone()
        };
        match load_for_utilization(&workload, &flat, DEFAULT_TARGET_UTILIZATION) {
            Some(l) => {
                // Under the shared gateway model whatever `--gateway` says, so that both
                // models replay a trace at the same default load.
                let shared = SimConfig {
                    gateway: GatewayModel::default(),
                    ..cfg.clone()
                };
                let chosen = calibrate_load(
                    l,
                    &policies,
                    &shared,
                    DEFAULT_TARGET_UTILIZATION,
                    &mut |c: &SimConfig| build(c),
                )?;
                cfg.load = chosen.load;
                workload = build(&cfg)?;
                format!(
                    ", the default: the arrival rate scaled so the compared policies' median \
                     busy share is {:.0} % while the requests arrive ({:.0} % measured in {} \
                     replay{} from the fluid model's x{:.2}), the middle of 50-80 %, where \
                     routing matters; --load L to choose",
                    100.0 * DEFAULT_TARGET_UTILIZATION,
                    100.0 * chosen.median_busy,
                    chosen.probes,
                    if chosen.probes == 1 { "" } else { "s" },
                    l
                )
            }
            None => ", the trace's own rate: the default rule needs an arrival span".into(),
        }
    } else {
        String::new()
    };
    if let Some(spike) = cfg.spike {
        // The window is in virtual seconds after --load; the trace must reach it.
        let first = rows.first().map_or(0, |r| r.arrival_ms);
        let span_s = rows.last().map_or(0, |r| r.arrival_ms - first) as f64 / 1000.0 / cfg.load;
        if spike.start_s >= span_s {
            return Err(format!(
                "--spike starts at {} s, after the trace's last arrival ({span_s:.0} s at --load {})",
                spike.start_s, cfg.load
            )
            .into());
        }
    }
    if workload.fleet.nodes.is_empty() {
        return Err(format!("the fleet ({}) has no node", fleet_name()).into());
    }
    if workload.classes.iter().all(Vec::is_empty) {
        return Err(format!(
            "no node of the fleet ({}) can serve any task of the trace (every task requires \
             `{}`, and inputs over 4096 tokens also `long-context`)",
            fleet_name(),
            cfg.base_capability
        )
        .into());
    }
    let tasks = workload.tasks.len() as u64;
    let mut bar = Progress::new(tasks * policies.len() as u64, "tasks");
    let outcomes = compare_outcomes(&workload, &policies, &cfg, &mut |k, arrived| {
        bar.set(k as u64 * tasks + arrived as u64, policies[k]);
    })?;
    bar.finish();
    let report = Report::new(&workload, &cfg, &outcomes);
    let wall = started.elapsed();
    let span = workload.tasks.last().map_or(0, |t| t.arrival_ns) as f64 / 1e9;
    let mut out = String::new();
    writeln!(
        out,
        "switchyard simulate: {name}: {} requests over {span:.0} s of virtual arrivals (load x{}{load_rule}), seed {}, \
         prefix cache {}, KV admission {}, SLO given to the router {}",
        workload.tasks.len(),
        cfg.load,
        cfg.seed,
        if cfg.prefix_cache { "on" } else { "off" },
        if cfg.kv_admission { "on" } else { "off" },
        if cfg.slo_in_task { "yes" } else { "no" },
    )?;
    writeln!(
        out,
        "fleet: {} nodes; latencies in virtual ms, decision latency in real ns",
        workload.fleet.nodes.len()
    )?;
    writeln!(
        out,
        "offered work: {:.1} % of the fleet's modelled capacity; the best balance deviation \
         its capability constraints allow: {:.3} (fluid water-filling; `bal run/arr/bnd` below: \
         the whole run, the arrival window, the bound)",
        100.0 * report.offered_utilization,
        report.balance_bound,
    )?;
    writeln!(
        out,
        "gateway model: {}",
        match cfg.gateway {
            GatewayModel::Shared =>
                "shared (every policy behind the same queue, strict priority, tenant fairness \
                 and SLO-hopeless shedding; each policy chooses among the capable nodes that can \
                 start the task now, and the task waits at the gateway while there is none; \
                 --gateway per-policy for each system's own admission)",
            GatewayModel::PerPolicy =>
                "per-policy (the peers dispatch at once and nodes queue without bound; \
                 switchyard waits and sheds by its own admission)",
        }
    )?;
    out += &report.table();
    writeln!(
        out,
        "simulated {} policies in {:.2} s of wall time",
        policies.len(),
        wall.as_secs_f64()
    )?;
    if let Some(p) = report.policies.iter().find(|p| p.policy == "switchyard") {
        writeln!(
            out,
            "router throughput: {:.2} M decisions/s (router: {} decisions in {:.2} ms inside it) \
             · {:.2} M tasks/s (whole event loop: {} tasks in {:.2} ms)",
            p.decisions_per_s() / 1e6,
            p.decisions,
            p.decision_time_ns as f64 / 1e6,
            p.tasks_per_s() / 1e6,
            p.tasks,
            p.event_loop_ns as f64 / 1e6,
        )?;
    }
    let spikes: Vec<SpikeReport> = match &cfg.spike {
        Some(s) => outcomes
            .iter()
            .map(|o| SpikeReport::of(&workload, o, s))
            .collect(),
        None => Vec::new(),
    };
    if let Some(s) = &cfg.spike {
        writeln!(
            out,
            "spike: arrivals x{} from {} s for {} s (virtual); demand = arrivals over \
             completions in the window; crit% admitted, critSLO% within their latency \
             constraint; shed by class; util% during the spike; steady-bal = balance \
             deviation before it",
            s.factor, s.start_s, s.seconds
        )?;
        writeln!(out, "{SPIKE_HEADER}")?;
        for r in &spikes {
            writeln!(out, "{r}")?;
        }
    }
    emit(&out)?;
    if let Some(path) = &args.json {
        let mut json = report.to_json();
        if !spikes.is_empty() && json.trim_end().ends_with('}') {
            let end = json.trim_end().len() - 1;
            json.truncate(end);
            json.push_str(",\"spike\":{");
            for (k, r) in spikes.iter().enumerate() {
                if k > 0 {
                    json.push(',');
                }
                json.push_str(&format!("\"{}\":{}", r.policy, r.to_json()));
            }
            json.push_str("}}\n");
        }
        std::fs::write(path, json).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        emit(&format!("wrote {}\n", path.display()))?;
    }
    if let Some(dir) = &args.out {
        for f in crate::plot::write_all(dir, &workload, &outcomes)? {
            emit(&format!("wrote {}\n", f.display()))?;
        }
    }
    Ok(())
}

/// Writes `s` to stdout; a closed pipe (`simulate | head`) is not an error.
fn emit(s: &str) -> Result<(), Error> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(s.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
