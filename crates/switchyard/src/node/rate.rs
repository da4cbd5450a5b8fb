//! The GCRA (generic cell rate algorithm) in one atomic word, shared by node and tenant token
//! rates: the theoretical arrival time (clock ns) moves ahead by each reservation's cost and
//! may run at most a burst ahead of now.
//!
//! Every sum saturates: a clock near `u64::MAX` or a cost that saturated (a huge task at the
//! slowest rate) reads as "not admitted", never as an overflow (a panic in a debug build, a
//! wrapped schedule that admits everything in a release build).
use crate::sync::{AtomicU64, Ordering};

/// How far ahead of `now` the schedule runs after taking `cost_ns` from `tat`.
#[inline]
fn ahead_after(tat: u64, now: u64, cost_ns: u64) -> (u64, u64) {
    let next = tat.max(now).saturating_add(cost_ns);
    // `next >= now`: no underflow.
    (next, next - now)
}

/// Whether a GCRA whose theoretical arrival time is `tat` admits `cost_ns` more now: the
/// TAT may run at most `burst_ns` ahead of now. Relaxed: a hint for routing; `gcra_take`
/// decides.
#[inline]
pub(crate) fn gcra_allows(tat: &AtomicU64, now: u64, cost_ns: u64, burst_ns: u64) -> bool {
    let (next, ahead) = ahead_after(tat.load(Ordering::Relaxed), now, cost_ns);
    ahead <= burst_ns && next != u64::MAX
}

/// Takes `cost_ns` of a GCRA if it fits (a CAS loop). Relaxed: the state is one location;
/// every update is an RMW in its modification order, so no two takers both get the last of
/// the burst, and it publishes nothing else.
pub(crate) fn gcra_take(tat: &AtomicU64, now: u64, cost_ns: u64, burst_ns: u64) -> bool {
    let mut cur = tat.load(Ordering::Relaxed);
    loop {
        let (next, ahead) = ahead_after(cur, now, cost_ns);
        // A saturated schedule is refused: it could not be refunded exactly.
        if ahead > burst_ns || next == u64::MAX {
            return false;
        }
        match tat.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(seen) => cur = seen,
        }
    }
}

/// Settles a GCRA reservation: charges (`delta_ns` > 0) or refunds (< 0). The state
/// saturates at both ends: a refund never moves it below zero, a charge never wraps it past
/// `u64::MAX`. Relaxed: as `gcra_take`.
pub(crate) fn gcra_settle(tat: &AtomicU64, delta_ns: i64) {
    if delta_ns == 0 {
        return;
    }
    let amount = delta_ns.unsigned_abs();
    let mut cur = tat.load(Ordering::Relaxed);
    loop {
        let new = if delta_ns > 0 {
            cur.saturating_add(amount)
        } else {
            cur.saturating_sub(amount)
        };
        match tat.compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(seen) => cur = seen,
        }
    }
}

/// Gives back a whole reservation of `cost_ns` (one that `gcra_take` granted and that was
/// never used: the reservation failed further on). Relaxed: as `gcra_take`.
pub(crate) fn gcra_refund(tat: &AtomicU64, cost_ns: u64) {
    gcra_settle(tat, -(cost_ns.min(i64::MAX as u64) as i64));
}

#[cfg(all(test, not(switchyard_loom)))]
mod test {
    use super::*;

    /// Extremes that once overflowed `t + cost_ns` (a panic in a debug build).
    #[test]
    fn extremes_saturate_instead_of_overflowing() {
        let tat = AtomicU64::new(0);
        // A saturated cost (the slowest rate times the largest task) is never admitted.
        assert!(!gcra_allows(&tat, 1_000, u64::MAX, u64::MAX));
        assert!(!gcra_take(&tat, 1_000, u64::MAX, u64::MAX));
        assert_eq!(tat.load(Ordering::Relaxed), 0);
        // A clock near the end of time.
        let now = u64::MAX - 10;
        assert!(gcra_allows(&tat, now, 5, 100));
        assert!(gcra_take(&tat, now, 5, 100));
        assert_eq!(tat.load(Ordering::Relaxed), now + 5);
        assert!(!gcra_allows(&tat, now, 20, u64::MAX));
        assert!(!gcra_take(&tat, now, 20, u64::MAX));
        assert_eq!(
            tat.load(Ordering::Relaxed),
            now + 5,
            "a refusal changes nothing"
        );
        // A schedule far ahead with a cost: no wrap.
        let tat = AtomicU64::new(u64::MAX - 1);
        assert!(!gcra_allows(&tat, 0, u64::MAX - 1, u64::MAX));
        assert!(!gcra_take(&tat, 0, 2, u64::MAX));
        // Settling saturates at both ends.
        gcra_settle(&tat, i64::MAX);
        assert_eq!(tat.load(Ordering::Relaxed), u64::MAX);
        gcra_settle(&tat, i64::MIN);
        assert_eq!(tat.load(Ordering::Relaxed), u64::MAX - (1 << 63));
        let tat = AtomicU64::new(5);
        gcra_settle(&tat, i64::MIN);
        assert_eq!(tat.load(Ordering::Relaxed), 0);
        gcra_refund(&tat, u64::MAX);
        assert_eq!(tat.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_refund_gives_back_exactly_what_was_taken() {
        let tat = AtomicU64::new(0);
        assert!(gcra_take(&tat, 1_000, 300, 1_000));
        assert!(gcra_take(&tat, 1_000, 300, 1_000));
        gcra_refund(&tat, 300);
        assert_eq!(tat.load(Ordering::Relaxed), 1_300);
        gcra_refund(&tat, 300);
        // Back at `now`: the same admission as an untouched schedule.
        assert!(gcra_take(&tat, 1_000, 1_000, 1_000));
    }
}
