//! The replaceable clock.
//!
//! Logical time (EWMA decay, control ticks, timeouts) comes through [`Clock`], so tests and
//! the simulator can drive it by hand with [`ManualClock`]. Decision latency is always measured
//! with the real TSC (`quanta`), since it reports what the router itself costs.
use crate::sync::{Arc, AtomicU64, Ordering};

/// A monotonic source of nanoseconds.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Nanoseconds since an arbitrary fixed origin; never decreases.
    fn now_ns(&self) -> u64;
}

/// Real time from the TSC via `quanta` (≈ 25 ns a read on this class of machine).
///
/// Under miri, which cannot run the TSC's instructions, `std::time::Instant` stands in.
#[derive(Debug, Clone)]
pub struct SystemClock {
    #[cfg(not(miri))]
    clock: quanta::Clock,
    #[cfg(not(miri))]
    origin: quanta::Instant,
    #[cfg(miri)]
    origin: std::time::Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        #[cfg(not(miri))]
        {
            let clock = quanta::Clock::new();
            let origin = clock.now();
            Self { clock, origin }
        }
        #[cfg(miri)]
        Self {
            origin: std::time::Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now_ns(&self) -> u64 {
        #[cfg(not(miri))]
        let elapsed = self.clock.now().saturating_duration_since(self.origin);
        #[cfg(miri)]
        let elapsed = self.origin.elapsed();
        elapsed.as_nanos() as u64
    }
}

/// A clock that moves only when told to: deterministic tests and virtual-time simulation.
///
/// # Examples
/// ```
/// use switchyard::{Clock, ManualClock};
/// let c = ManualClock::new();
/// c.advance_ms(5);
/// assert_eq!(c.now_ns(), 5_000_000);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the time; a value earlier than now is ignored (the clock is monotonic).
    pub fn set_ns(&self, ns: u64) {
        // Relaxed: the clock value is a plain number; anything published "at" a time is
        // synchronised through its own channel, never through the clock.
        self.0.fetch_max(ns, Ordering::Relaxed);
    }

    /// Moves the clock forward.
    pub fn advance_ns(&self, ns: u64) {
        // Relaxed: see `set_ns`.
        self.0.fetch_add(ns, Ordering::Relaxed);
    }

    /// Moves the clock forward by milliseconds.
    pub fn advance_ms(&self, ms: u64) {
        self.advance_ns(ms.saturating_mul(1_000_000));
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        // Relaxed: see `set_ns`.
        self.0.load(Ordering::Relaxed)
    }
}

/// The TSC stopwatch for decision latency: two raw reads per decision, converted once.
/// Under miri, `std::time::Instant` stands in.
#[derive(Debug, Clone)]
pub(crate) struct Stopwatch(
    #[cfg(not(miri))] quanta::Clock,
    #[cfg(miri)] std::time::Instant,
);

impl Stopwatch {
    pub(crate) fn new() -> Self {
        #[cfg(not(miri))]
        return Self(quanta::Clock::new());
        #[cfg(miri)]
        return Self(std::time::Instant::now());
    }

    #[inline]
    pub(crate) fn start(&self) -> u64 {
        #[cfg(not(miri))]
        return self.0.raw();
        #[cfg(miri)]
        return self.0.elapsed().as_nanos() as u64;
    }

    #[inline]
    pub(crate) fn elapsed_ns(&self, start: u64) -> u64 {
        #[cfg(not(miri))]
        return self.0.delta_as_nanos(start, self.0.raw());
        #[cfg(miri)]
        return (self.0.elapsed().as_nanos() as u64).saturating_sub(start);
    }
}

#[cfg(all(test, not(switchyard_loom)))]
mod test {
    use super::*;

    #[test]
    fn manual_clock_is_monotonic() {
        let c = ManualClock::new();
        c.set_ns(10);
        c.set_ns(5);
        assert_eq!(c.now_ns(), 10);
        c.advance_ns(3);
        assert_eq!(c.clone().now_ns(), 13);
    }

    #[test]
    fn system_clock_moves_forward() {
        let c = SystemClock::default();
        let a = c.now_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(c.now_ns() >= a + 1_000_000);
        let s = Stopwatch::new();
        let t = s.start();
        std::thread::sleep(std::time::Duration::from_millis(1));
        assert!(s.elapsed_ns(t) >= 500_000);
    }
}
