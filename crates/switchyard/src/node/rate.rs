//! The GCRA (generic cell rate algorithm) in one atomic word, shared by node and tenant token
//! rates: the theoretical arrival time (clock ns) moves ahead by each reservation's cost and
//! may run at most a burst ahead of now.
use crate::sync::{AtomicU64, Ordering};

/// Whether a GCRA whose theoretical arrival time is `tat` admits `cost_ns` more now: the
/// TAT may run at most `burst_ns` ahead of now. Relaxed: a hint for routing; `gcra_take`
/// decides.
#[inline]
pub(crate) fn gcra_allows(tat: &AtomicU64, now: u64, cost_ns: u64, burst_ns: u64) -> bool {
    let t = tat.load(Ordering::Relaxed).max(now);
    t + cost_ns - now <= burst_ns
}

/// Takes `cost_ns` of a GCRA if it fits (a CAS loop). Relaxed: the state is one location;
/// every update is an RMW in its modification order, so no two takers both get the last of
/// the burst, and it publishes nothing else.
pub(crate) fn gcra_take(tat: &AtomicU64, now: u64, cost_ns: u64, burst_ns: u64) -> bool {
    let mut cur = tat.load(Ordering::Relaxed);
    loop {
        let next = cur.max(now) + cost_ns;
        if next - now > burst_ns {
            return false;
        }
        match tat.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(seen) => cur = seen,
        }
    }
}

/// Settles a GCRA reservation: charges (`delta_ns` > 0) or refunds (< 0). A refund never
/// moves the state below zero. Relaxed: as `gcra_take`.
pub(crate) fn gcra_settle(tat: &AtomicU64, delta_ns: i64) {
    if delta_ns >= 0 {
        tat.fetch_add(delta_ns as u64, Ordering::Relaxed);
        return;
    }
    let refund = delta_ns.unsigned_abs();
    let mut cur = tat.load(Ordering::Relaxed);
    loop {
        match tat.compare_exchange_weak(
            cur,
            cur.saturating_sub(refund),
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => return,
            Err(seen) => cur = seen,
        }
    }
}
