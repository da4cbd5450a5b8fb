//! Small helpers the simulator keeps for itself: a seedable PRNG and the histogram bounds.
//!
//! The router has its own PRNG for its pickers, private to it; the simulator's policies draw
//! from this copy of the same algorithm (xorshift64* seeded through splitmix64), so a
//! policy's stream is reproducible from its seed alone and independent of the router's.
use hdrhistogram::Histogram;

/// A small, fast, seedable PRNG (xorshift64*).
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

    /// Uniform in `0..n` (n > 0), by multiply-shift.
    #[inline]
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }
}

/// A histogram of nanoseconds from 1 ns to about 4.6 minutes at 3 significant figures.
pub(crate) fn new_histogram() -> Histogram<u64> {
    // Constant bounds that hdrhistogram accepts (low ≥ 1, high ≥ 2·low, sigfig ≤ 5).
    Histogram::new_with_bounds(1, 1 << 38, 3).expect("constant histogram bounds are valid")
}
