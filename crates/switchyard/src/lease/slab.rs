//! Lease timeouts: a fixed slab of lease records that two parties may end, exactly once.
//!
//! A router built with a lease timeout registers every lease here. The lease's owner (a
//! ticket, a gateway holding a [`Lease`](super::Lease)) ends it on completion; the control
//! thread ends it when its deadline has passed, so a completion that never comes (a hung
//! backend, a leaked handle) cannot hold capacity forever. Whoever ends the record returns
//! the lease's resources to the ledgers; the other party learns that it lost and returns
//! nothing.
//!
//! # Protocol
//!
//! Each slot has a state word `generation << 2 | tag` with tags `FREE`, `ACTIVE` and `BUSY`,
//! and the lease's amounts in plain atomics beside it.
//!
//! - **register**: pop a free slot index (a tagged Treiber stack, so an index is owned by one
//!   popper), write the amounts, then store `ACTIVE(g)` with Release.
//! - **end** (owner on completion, or control thread on expiry): load the state; when it is
//!   `ACTIVE(g)`, read the amounts, then CAS `ACTIVE(g) → FREE(g + 1)`. Only one CAS from
//!   `ACTIVE(g)` can succeed, and a generation repeats only after 2^40 transitions of the
//!   record (generations count modulo 2^40, as a packed registration keeps them), so exactly
//!   one party ends each registration. The winner pushes the index back; the loser returns nothing.
//! - **adjust** (owner only): CAS `ACTIVE(g) → BUSY(g)`, rewrite the amounts, store
//!   `ACTIVE(g + 1)`. The control thread skips a `BUSY` slot (it looks again next tick), so it
//!   never returns amounts that are being changed, and a reclaimer that read the amounts
//!   before the change fails its CAS (the generation moved).
//!
//! The amounts the control thread reads before its CAS belong to generation `g`: they were
//! written before the Release store of `ACTIVE(g)` its Acquire load saw, and any later writer
//! of the slot first needs the slot freed, which makes this CAS fail. The loom model
//! `lease_timeout` checks a completion racing a reclamation.
use crate::model::{NodeId, MAX_STAGES};
use crate::sync::{AtomicU64, CachePadded, Ordering};

const FREE: u64 = 0;
const ACTIVE: u64 = 1;
const BUSY: u64 = 2;
const TAG: u64 = 3;
/// "No node" in a stage's node field, and "empty" in the free stack.
const NONE: u64 = u64::MAX;

#[derive(Debug)]
struct Slot {
    state: AtomicU64,
    /// Clock ns after which the control thread may reclaim the lease.
    deadline_ns: AtomicU64,
    /// Per stage: the node's stable id (`NONE` past the route's end), and its two ledger
    /// words' amounts.
    node: [AtomicU64; MAX_STAGES],
    d0: [AtomicU64; MAX_STAGES],
    d1: [AtomicU64; MAX_STAGES],
    /// Next free index while the slot is on the free stack.
    next: AtomicU64,
}

impl Slot {
    fn new(next: u64) -> Self {
        Self {
            state: AtomicU64::new(FREE),
            deadline_ns: AtomicU64::new(0),
            node: std::array::from_fn(|_| AtomicU64::new(NONE)),
            d0: std::array::from_fn(|_| AtomicU64::new(0)),
            d1: std::array::from_fn(|_| AtomicU64::new(0)),
            next: AtomicU64::new(next),
        }
    }
}

/// One stage's reservation as the slab records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StageAmounts {
    pub(crate) node: NodeId,
    pub(crate) d0: u64,
    pub(crate) d1: u64,
}

/// A registration: which slot, and which generation of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotRef {
    pub(crate) index: u32,
    pub(crate) generation: u64,
}

/// Most records a slab holds: indices fit 24 bits, so a registration packs into one word.
pub(crate) const MAX_SLOTS: usize = 1 << 24;

/// Generations are counted modulo 2^40, in the state word and in a packed [`SlotRef`]
/// alike: the state word has room for 62 bits, but a registration keeps only 40 beside its
/// 24-bit index, and the two must agree or every `end` of a record past 2^40 uses fails.
/// (A reclaimer would need to hold a stale value across 2^40 transitions of one record for
/// a repeated generation to matter.)
pub(crate) const GENERATION_MASK: u64 = (1 << 40) - 1;

/// The generation after `g`, wrapping like the packed one.
#[inline]
const fn next_generation(g: u64) -> u64 {
    (g + 1) & GENERATION_MASK
}

impl SlotRef {
    /// "No registration" when packed.
    pub(crate) const NONE: u64 = u64::MAX;

    /// One word: generation (40 bits, about 10¹² registrations and adjustments of one
    /// record before it wraps) above the index (24 bits).
    #[inline]
    pub(crate) fn pack(self) -> u64 {
        ((self.generation & GENERATION_MASK) << 24) | self.index as u64
    }

    #[inline]
    pub(crate) fn unpack(w: u64) -> Self {
        Self {
            index: (w & 0xFF_FFFF) as u32,
            generation: w >> 24,
        }
    }
}

/// What leases of one router share beyond their nodes: the lease slab (when leases time
/// out) and the tenants' token-rate states. One `Arc`, so a lease that uses either holds one
/// pointer.
#[derive(Debug)]
pub(crate) struct LeaseShared {
    pub(crate) slab: Option<LeaseSlab>,
    pub(crate) tenants: crate::tenant::TenantRates,
}

impl LeaseShared {
    pub(crate) fn new(slab: Option<LeaseSlab>) -> Self {
        Self {
            slab,
            tenants: crate::tenant::TenantRates::new(),
        }
    }
}

/// The lease records of one router. Fixed capacity: when every slot is taken, leasing fails
/// with `Saturated` (the router is at its limit of outstanding leases).
///
/// The records are split into shards of contiguous indices, each with its own free stack
/// and scan bound on its own cache line. A lease takes a record from its lane's shard (a
/// router reader's, see `reserve`), and its end gives the record back to the shard it came
/// from, so threads routing at once pop and push different heads instead of all writing
/// one. A shard found empty sends the pop on to the next, and the slab is full when every
/// shard was found empty in turn. The shards are looked at one after another, not at one
/// instant: a record given back to a shard the pop has already passed is not seen, so near
/// capacity a pop can report the slab full while a record came free behind it (as if it had
/// asked an instant earlier). A single stack had no such window; the shards trade it for
/// taking and giving back records without a line that every thread writes.
#[derive(Debug)]
pub(crate) struct LeaseSlab {
    slots: Box<[Slot]>,
    shards: Box<[CachePadded<Shard>]>,
    /// log2 of the records per shard (a power of two, so a record's shard is a shift away;
    /// the last shard may hold fewer).
    shard_shift: u32,
    /// Leases the control thread reclaimed.
    reclaimed: AtomicU64,
    /// Owners that ended a lease after it had been reclaimed.
    late: AtomicU64,
    timeout_ns: u64,
}

/// One shard's free stack and scan bound.
#[derive(Debug)]
struct Shard {
    /// Free stack head: `tag << 32 | index` (`index == u32::MAX`: empty). The tag changes on
    /// every pop and push, so a stale head cannot be swapped in (ABA).
    head: AtomicU64,
    /// One past the highest record index this shard ever registered: the reclaim scan of
    /// the shard stops there. The free stack is LIFO and starts in index order, so this
    /// follows the peak number of the shard's leases out at once, not its size.
    high: AtomicU64,
}

const EMPTY_INDEX: u64 = u32::MAX as u64;

impl LeaseSlab {
    /// A slab of `capacity` records (at least 1, at most [`MAX_SLOTS`]) in up to `shards`
    /// shards (at least 1, at most one per record) whose leases expire `timeout_ms` after
    /// they are taken. A shard holds a power of two records (the last may hold fewer), so
    /// there may be fewer shards than asked: 10 records in 4 shards make 3 of 4, 4 and 2.
    pub(crate) fn new(capacity: usize, timeout_ms: u64, shards: usize) -> Self {
        let capacity = capacity.clamp(1, MAX_SLOTS);
        let shard_len = capacity
            .div_ceil(shards.clamp(1, capacity))
            .next_power_of_two();
        let count = capacity.div_ceil(shard_len);
        let slots = (0..capacity)
            .map(|i| {
                // Each shard's stack starts as its range in index order.
                let next = if (i + 1) % shard_len != 0 && i + 1 < capacity {
                    (i + 1) as u64
                } else {
                    EMPTY_INDEX
                };
                Slot::new(next)
            })
            .collect();
        let shards = (0..count)
            .map(|k| {
                CachePadded::new(Shard {
                    head: AtomicU64::new((k * shard_len) as u64),
                    high: AtomicU64::new((k * shard_len) as u64),
                })
            })
            .collect();
        Self {
            slots,
            shards,
            shard_shift: shard_len.trailing_zeros(),
            reclaimed: AtomicU64::new(0),
            late: AtomicU64::new(0),
            timeout_ns: timeout_ms.saturating_mul(1_000_000),
        }
    }

    /// How many shards the records are split into.
    #[cfg(test)]
    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The shard record `index` belongs to.
    #[inline]
    fn shard_of(&self, index: u32) -> &Shard {
        &self.shards[index as usize >> self.shard_shift]
    }

    pub(crate) fn timeout_ns(&self) -> u64 {
        self.timeout_ns
    }

    #[allow(dead_code)] // used by metrics
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// A free record, from shard `lane` (modulo the shard count) or, when that one is empty,
    /// from the next shard that is not; `None` when each was empty as it was looked at (see
    /// the type's docs).
    fn pop_free(&self, lane: usize) -> Option<u32> {
        let count = self.shards.len();
        // The shard count is a power of two unless the capacity cut it short: a mask, not a
        // division, in the common case, and none in the walk.
        let mut at = if count.is_power_of_two() {
            lane & (count - 1)
        } else {
            lane % count
        };
        for _ in 0..count {
            if let Some(index) = Self::pop_shard(&self.slots, &self.shards[at]) {
                return Some(index);
            }
            at += 1;
            if at == count {
                at = 0;
            }
        }
        None
    }

    fn pop_shard(slots: &[Slot], shard: &Shard) -> Option<u32> {
        // Acquire: pairs with the Release of `push_free`, so the popped slot's `next` and its
        // FREE state (written by whoever freed it) are visible.
        let mut head = shard.head.load(Ordering::Acquire);
        loop {
            let index = head & 0xFFFF_FFFF;
            if index == EMPTY_INDEX {
                return None;
            }
            // Relaxed: ordered by the Acquire load of `head` that returned this index; if
            // the slot was popped and pushed meanwhile, the tag moved and the CAS fails.
            let next = slots[index as usize].next.load(Ordering::Relaxed);
            let new = (((head >> 32) + 1) << 32) | (next & 0xFFFF_FFFF);
            match shard
                .head
                .compare_exchange_weak(head, new, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => return Some(index as u32),
                Err(seen) => head = seen,
            }
        }
    }

    /// Gives record `index` back to its own shard's stack.
    fn push_free(&self, index: u32) {
        let shard = self.shard_of(index);
        // Relaxed load: the CAS below validates it.
        let mut head = shard.head.load(Ordering::Relaxed);
        loop {
            // Relaxed: published by the Release CAS below.
            self.slots[index as usize]
                .next
                .store(head & 0xFFFF_FFFF, Ordering::Relaxed);
            let new = (((head >> 32) + 1) << 32) | index as u64;
            // Release: the slot's FREE state and `next` happen before a popper's Acquire.
            match shard
                .head
                .compare_exchange_weak(head, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(seen) => head = seen,
            }
        }
    }

    /// Records a lease's stages, due at `deadline_ns`, preferably in shard `lane` (modulo the
    /// shard count); `None` when every slot is taken.
    pub(crate) fn register(
        &self,
        deadline_ns: u64,
        stages: &[StageAmounts],
        lane: usize,
    ) -> Option<SlotRef> {
        let index = self.pop_free(lane)?;
        let slot = &self.slots[index as usize];
        // Relaxed: we own the free slot (popped it); its state is FREE(g), written before the
        // push we synchronised with.
        let generation = slot.state.load(Ordering::Relaxed) >> 2;
        slot.deadline_ns.store(deadline_ns, Ordering::Relaxed);
        for i in 0..MAX_STAGES {
            let s = stages.get(i);
            // Relaxed: published by the Release store of ACTIVE below.
            slot.node[i].store(s.map_or(NONE, |s| s.node.0 as u64), Ordering::Relaxed);
            slot.d0[i].store(s.map_or(0, |s| s.d0), Ordering::Relaxed);
            slot.d1[i].store(s.map_or(0, |s| s.d1), Ordering::Relaxed);
        }
        // Release: the amounts above happen before any Acquire load that sees ACTIVE(g).
        slot.state
            .store(generation << 2 | ACTIVE, Ordering::Release);
        // Relaxed: bounds the reclaim scan only; a scan that reads a stale bound misses this
        // record for one tick and finds it on the next (reclaiming is never urgent to the
        // nanosecond). A plain load first, so the hot path writes the line only on a new peak.
        let next = index as u64 + 1;
        let high = &self.shard_of(index).high;
        if high.load(Ordering::Relaxed) < next {
            high.fetch_max(next, Ordering::Relaxed);
        }
        Some(SlotRef { index, generation })
    }

    /// The owner ends its registration. `true`: it was still active, and the caller returns
    /// its resources; `false`: the control thread reclaimed it first (counted as late).
    pub(crate) fn end(&self, r: SlotRef) -> bool {
        let slot = &self.slots[r.index as usize];
        // AcqRel on success: Release so that the next owner of the slot (through the push's
        // Release / pop's Acquire) is ordered after us; Acquire is not needed for the amounts
        // (the owner has its own copy) but keeps the transitions totally ordered with the
        // reclaimer's. Relaxed on failure: we only count.
        let ended = slot
            .state
            .compare_exchange(
                r.generation << 2 | ACTIVE,
                next_generation(r.generation) << 2 | FREE,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok();
        if ended {
            self.push_free(r.index);
        } else {
            // Relaxed: a statistic.
            self.late.fetch_add(1, Ordering::Relaxed);
        }
        ended
    }

    /// The owner takes its active registration to change its amounts (`finish_adjust` hands
    /// it back); meanwhile the control thread leaves it alone. `false`: it was reclaimed.
    pub(crate) fn begin_adjust(&self, r: SlotRef) -> bool {
        // Acquire/Relaxed: only the owner writes the amounts, so there is nothing to acquire;
        // the CAS just makes the slot ours (the reclaimer skips BUSY and its own CAS from
        // ACTIVE(g) fails while we hold it).
        self.slots[r.index as usize]
            .state
            .compare_exchange(
                r.generation << 2 | ACTIVE,
                r.generation << 2 | BUSY,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Ends an adjustment begun with `begin_adjust`: records stage `stage`'s amounts and makes
    /// the registration active again under a new generation, which the owner keeps.
    ///
    /// The new generation matters: a reclaimer that read the old amounts before the
    /// adjustment still holds `ACTIVE(g)` as its expected value, and would succeed with stale
    /// amounts if the state came back as `ACTIVE(g)` (ABA; found by the loom model).
    pub(crate) fn finish_adjust(&self, r: SlotRef, stage: usize, d0: u64, d1: u64) -> SlotRef {
        let slot = &self.slots[r.index as usize];
        // Relaxed: published by the Release store below.
        slot.d0[stage].store(d0, Ordering::Relaxed);
        slot.d1[stage].store(d1, Ordering::Relaxed);
        let next = SlotRef {
            index: r.index,
            generation: next_generation(r.generation),
        };
        // Release: a reclaimer's Acquire load of ACTIVE(g + 1) sees the new amounts.
        slot.state
            .store(next.generation << 2 | ACTIVE, Ordering::Release);
        next
    }

    /// Whether the registration is still active (not reclaimed). Relaxed: a report.
    pub(crate) fn is_active(&self, r: SlotRef) -> bool {
        let s = self.slots[r.index as usize].state.load(Ordering::Relaxed);
        s >> 2 == r.generation && s & TAG != FREE
    }

    /// Reclaims every active registration whose deadline is at or before `now`: ends it and
    /// hands each stage's amounts to `release` (the control thread finds the node by id and
    /// returns them). Returns how many it reclaimed.
    pub(crate) fn reclaim_expired(
        &self,
        now: u64,
        mut release: impl FnMut(usize, StageAmounts),
    ) -> u64 {
        let mut n = 0;
        for (k, shard) in self.shards.iter().enumerate() {
            let start = k << self.shard_shift;
            // Relaxed: see `register`.
            let high = (shard.high.load(Ordering::Relaxed) as usize).min(self.slots.len());
            for index in start..high.max(start) {
                if self.reclaim_one(index, now, &mut release) {
                    n += 1;
                }
            }
        }
        // Relaxed: a statistic.
        self.reclaimed.fetch_add(n, Ordering::Relaxed);
        n
    }

    /// Reclaims record `index` if it is active and due at or before `now` (see
    /// `reclaim_expired`); whether it did.
    fn reclaim_one(
        &self,
        index: usize,
        now: u64,
        release: &mut impl FnMut(usize, StageAmounts),
    ) -> bool {
        let slot = &self.slots[index];
        // Acquire: pairs with the Release store of ACTIVE(g) (register / adjust), so the
        // amounts read below are generation g's.
        let state = slot.state.load(Ordering::Acquire);
        if state & TAG != ACTIVE {
            return false;
        }
        // Relaxed: see above.
        if slot.deadline_ns.load(Ordering::Relaxed) > now {
            return false;
        }
        let mut stages = [None; MAX_STAGES];
        for (i, out) in stages.iter_mut().enumerate() {
            let node = slot.node[i].load(Ordering::Relaxed);
            if node != NONE {
                *out = Some(StageAmounts {
                    node: NodeId(node as u32),
                    d0: slot.d0[i].load(Ordering::Relaxed),
                    d1: slot.d1[i].load(Ordering::Relaxed),
                });
            }
        }
        // AcqRel: as in `end`; exactly one of the two CASes from ACTIVE(g) succeeds.
        if slot
            .state
            .compare_exchange(
                state,
                next_generation(state >> 2) << 2 | FREE,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return false; // ended by its owner, or being adjusted: looked at again next tick
        }
        for (i, s) in stages.iter().enumerate() {
            if let Some(s) = s {
                release(i, *s);
            }
        }
        self.push_free(index as u32);
        true
    }

    /// Sets a free record's generation (tests start a record near the wrap).
    #[cfg(test)]
    pub(crate) fn set_generation(&self, index: u32, generation: u64) {
        let slot = &self.slots[index as usize];
        // Relaxed: single-threaded test setup.
        assert_eq!(slot.state.load(Ordering::Relaxed) & TAG, FREE);
        slot.state.store(
            (generation & GENERATION_MASK) << 2 | FREE,
            Ordering::Relaxed,
        );
    }

    /// Leases reclaimed so far, and owners that ended a reclaimed lease (relaxed: a report).
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.reclaimed.load(Ordering::Relaxed),
            self.late.load(Ordering::Relaxed),
        )
    }

    /// Registrations active now (a report; O(capacity)).
    #[allow(dead_code)] // used by metrics
    pub(crate) fn active(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.state.load(Ordering::Relaxed) & TAG != FREE)
            .count()
    }
}

#[cfg(all(test, not(switchyard_loom)))]
mod test {
    use super::*;

    fn stage(node: u32, d0: u64) -> StageAmounts {
        StageAmounts {
            node: NodeId(node),
            d0,
            d1: 0,
        }
    }

    #[test]
    fn owner_or_reclaimer_ends_each_registration_once() {
        let slab = LeaseSlab::new(2, 10, 1);
        let a = slab.register(100, &[stage(0, 5)], 0).unwrap();
        let b = slab.register(200, &[stage(1, 7), stage(2, 9)], 0).unwrap();
        assert!(slab.register(300, &[stage(0, 1)], 0).is_none(), "full");
        let mut released = Vec::new();
        assert_eq!(slab.reclaim_expired(150, |i, s| released.push((i, s))), 1);
        assert_eq!(released, vec![(0, stage(0, 5))]);
        assert!(!slab.is_active(a) && slab.is_active(b));
        assert!(!slab.end(a), "reclaimed first: the owner returns nothing");
        assert!(slab.end(b));
        assert!(!slab.end(b), "ended once");
        released.clear();
        assert_eq!(
            slab.reclaim_expired(u64::MAX, |i, s| released.push((i, s))),
            0
        );
        assert!(released.is_empty());
        assert_eq!(slab.counts(), (1, 2));
        assert_eq!(slab.active(), 0);
        // Both slots are free again, with new generations.
        let c = slab.register(0, &[], 0).unwrap();
        let d = slab.register(0, &[], 0).unwrap();
        assert_ne!(c.index, d.index);
        assert!(c.generation >= 1 || d.generation >= 1);
    }

    /// A record used 2^40 times: its generation wraps in the state word exactly as in the
    /// packed registration a lease keeps, so the owner can still end it (this once failed:
    /// the state kept 62 bits and the packed form 40, so every `end` after the wrap failed).
    #[test]
    fn generation_wraps_alike_in_state_and_packed_ref() {
        let slab = LeaseSlab::new(1, 10, 1);
        slab.set_generation(0, GENERATION_MASK - 1);
        let mut seen = Vec::new();
        for _ in 0..4 {
            let r = SlotRef::unpack(slab.register(100, &[stage(0, 5)], 0).unwrap().pack());
            seen.push(r.generation);
            assert!(slab.is_active(r), "generation {}", r.generation);
            assert!(slab.end(r), "end of generation {} failed", r.generation);
        }
        assert_eq!(seen, [GENERATION_MASK - 1, GENERATION_MASK, 0, 1]);
        // Through an adjustment and a reclaim across the wrap too.
        slab.set_generation(0, GENERATION_MASK);
        let r = SlotRef::unpack(slab.register(5, &[stage(0, 5)], 0).unwrap().pack());
        assert!(slab.begin_adjust(r));
        let r = SlotRef::unpack(slab.finish_adjust(r, 0, 6, 0).pack());
        assert_eq!(r.generation, 0);
        assert!(slab.is_active(r));
        assert_eq!(slab.reclaim_expired(10, |_, _| {}), 1);
        let r = SlotRef::unpack(slab.register(100, &[stage(0, 5)], 0).unwrap().pack());
        assert_eq!(r.generation, 1);
        assert!(slab.end(r));
        assert_eq!(slab.counts(), (1, 0));
    }

    /// A lane takes its own shard's records first, moves on to the next shard only when its
    /// own is empty, and a record ended goes back to the shard it came from; the slab is
    /// full when every shard is, and the reclaim scan covers every shard.
    #[test]
    fn shards_fill_in_turn_and_take_their_records_back() {
        let slab = LeaseSlab::new(6, 10, 2);
        assert_eq!(slab.shard_count(), 2);
        // Shards hold a power of two of records: shard 0 holds 0..4, shard 1 holds 4..6.
        let shard = |r: SlotRef| r.index as usize / 4;
        let a = slab.register(100, &[stage(0, 1)], 1).unwrap();
        let b = slab.register(100, &[stage(0, 1)], 1).unwrap();
        assert_eq!((shard(a), shard(b)), (1, 1));
        // Lane 1's shard is empty: lane 1 moves on to shard 0 (lane 3 is lane 1 again).
        let c = slab.register(100, &[stage(0, 1)], 3).unwrap();
        assert_eq!(shard(c), 0);
        let rest: Vec<SlotRef> = (0..3)
            .map(|_| slab.register(100, &[stage(0, 1)], 0).unwrap())
            .collect();
        assert!(rest.iter().all(|&r| shard(r) == 0));
        assert!(slab.register(100, &[stage(0, 1)], 0).is_none(), "full");
        assert!(slab.register(100, &[stage(0, 1)], 1).is_none(), "full");
        // A shard-1 record ended returns to shard 1, where lane 0 finds it last.
        assert!(slab.end(a));
        let d = slab.register(100, &[stage(0, 1)], 0).unwrap();
        assert_eq!(d.index, a.index);
        // Every shard's records are scanned.
        assert_eq!(slab.reclaim_expired(100, |_, _| {}), 6);
        assert_eq!(slab.active(), 0);
        assert_eq!(slab.counts(), (6, 0));
    }

    #[test]
    fn shard_count_is_clamped_to_the_records() {
        assert_eq!(LeaseSlab::new(3, 10, 8).shard_count(), 3);
        assert_eq!(LeaseSlab::new(16, 10, 0).shard_count(), 1);
        // 10 records over 4 shards: 3 per shard rounds up to 4 (a power of two), so 3
        // shards, the last holding 2; lanes are taken modulo 3.
        let slab = LeaseSlab::new(10, 10, 4);
        assert_eq!(slab.shard_count(), 3);
        let taken: Vec<u32> = (0..10)
            .map(|_| slab.register(1, &[], 5).unwrap().index)
            .collect();
        let mut sorted = taken.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<u32>>(), "each record once");
        assert_eq!(taken[0], 8, "lane 5 starts in the last shard");
        // The last shard (8..10) runs dry, and the walk wraps round to shard 0.
        assert_eq!(taken[2], 0);
    }

    #[test]
    fn a_record_is_120_bytes_as_documented() {
        assert_eq!(std::mem::size_of::<Slot>(), 120);
    }

    #[test]
    fn adjusted_amounts_are_what_is_reclaimed() {
        let slab = LeaseSlab::new(1, 10, 1);
        let a = slab.register(10, &[stage(3, 5)], 0).unwrap();
        assert!(slab.begin_adjust(a));
        let mut got = None;
        assert_eq!(
            slab.reclaim_expired(u64::MAX, |_, s| got = Some(s)),
            0,
            "busy: skipped"
        );
        let a = slab.finish_adjust(a, 0, 8, 2);
        slab.reclaim_expired(10, |_, s| got = Some(s));
        assert_eq!(
            got,
            Some(StageAmounts {
                node: NodeId(3),
                d0: 8,
                d1: 2
            })
        );
        assert!(!slab.begin_adjust(a), "reclaimed: nothing to adjust");
    }
}
