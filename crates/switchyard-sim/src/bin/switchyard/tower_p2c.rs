//! tower's p2c balancer timed exactly as `route_N` (see `switchyard_sim::tower_p2c`).
use std::hint::black_box;

use switchyard_sim::tower_p2c::TowerP2c;

use crate::bench::{hist, pct, Error, Pct};

/// p50/p99 of one balanced call and its release over `n` endpoints, `iters` calls after a
/// warm-up, per call with two TSC reads, as `route_N`.
pub(crate) fn time_p2c(n: usize, iters: usize, clock: &quanta::Clock) -> Result<Pct, Error> {
    let mut b = TowerP2c::new(n);
    for i in 0..(iters / 10 + 1000) as u64 {
        black_box(b.decide(i)?);
    }
    let mut h = hist();
    for i in 0..iters as u64 {
        let t0 = clock.raw();
        let r = b.decide(black_box(i));
        let t1 = clock.raw();
        black_box(r?);
        h.saturating_record(clock.delta_as_nanos(t0, t1));
    }
    Ok(pct(&h))
}
