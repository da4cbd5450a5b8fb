//! The pickers' PRNG: small, fast, seedable (xorshift64* seeded through splitmix64), one per
//! picker, and a per-thread one for the `&Router` paths (failover, the seed's interfaces).
/// A small, fast, seedable PRNG (xorshift64*), one per picker.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        // splitmix64 of the seed, never zero
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self((z ^ (z >> 31)) | 1)
    }

    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    #[inline]
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift.
    #[inline]
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }
}

// Under loom every modelled thread runs on one OS thread: use loom's per-model-thread locals.
#[cfg(switchyard_loom)]
use loom::thread_local;

thread_local! {
    static RNG: std::cell::RefCell<Rng> = std::cell::RefCell::new(Rng::new(thread_seed()));
}

/// Runs `f` with this thread's PRNG (the `&Router` engine paths and failover use it).
pub(crate) fn with_rng<R>(f: impl FnOnce(&mut Rng) -> R) -> R {
    RNG.with(|r| f(&mut r.borrow_mut()))
}

/// This thread's lane into the lease slab's shards, for callers without a reader (the
/// `&Router` engine, failover): a hash of the thread's id, taken once per thread, so
/// threads spread over the shards. Any lane is correct; distinct ones only spread writes.
pub(crate) fn thread_lane() -> usize {
    // Under loom every model thread runs on the test harness's thread, whose id (and so the
    // hash) varies from run to run: a fixed lane keeps each model's interleavings the same.
    if cfg!(switchyard_loom) {
        return 0;
    }
    thread_local! {
        static LANE: usize = thread_seed() as usize;
    }
    LANE.with(|l| *l)
}

/// A seed that differs between threads (a hash of the thread's id).
fn thread_seed() -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::thread::current().id().hash(&mut h);
    h.finish()
}
