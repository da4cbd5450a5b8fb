//! Fairness between tenants by token work: the Virtual Token Counter.
//!
//! [`FairQueue`] holds items of many tenants, one FIFO per tenant, and serves the backlogged
//! tenant that has received the least token work so far. It follows the Virtual Token Counter
//! (VTC) of Sheng et al., "Fairness in Serving Large Language Models" (OSDI 2024):
//!
//! * every tenant has a **counter** of the token work it has been served, divided by its
//!   weight; serving an item adds the item's work (see [`token_work`]) to its tenant's counter;
//! * the next item served is the head of the backlogged tenant (one with queued items) with
//!   the **smallest counter** (ties: the tenant the queue met first);
//! * a tenant that becomes backlogged again has its counter **lifted** to at least the
//!   smallest counter among the tenants backlogged at that moment (or, when none is, to the
//!   counter of the last tenant that stopped being backlogged). Idle time banks no credit: a
//!   tenant that was away cannot come back and claim the service it did not ask for, so it
//!   shares from now on instead of starving the others while it catches up.
//!
//! While two tenants are both backlogged, their counters never differ by more than the work
//! of one item (divided by the weight), whatever each submits: a tenant that floods the queue
//! gets its share and no more, and the others are not starved behind its backlog.
//!
//! # Why token work, not requests
//! Requests differ by orders of magnitude in cost: a 30 000-token prompt costs a backend what
//! hundreds of short chats do. Counting requests would let a tenant with long requests take
//! most of the capacity while "getting its share" of requests. The work of an item is chosen
//! by the caller; the dispatcher uses [`token_work`]: input tokens weigh 1 and output tokens 2
//! (the paper's default, `w_p = 1`, `w_q = 2`: each output token takes a decode step, and
//! providers price output at about twice the input).
//!
//! # Charging only what is served
//! [`pop`](FairQueue::pop) takes and charges at once. A caller that may fail to serve the item
//! (the dispatcher retries a task that can still be saturated) uses
//! [`take`](FairQueue::take), then either [`charge`](FairQueue::charge) when it was served,
//! [`requeue_front`](FairQueue::requeue_front) to put it back at its tenant's head, uncharged,
//! or [`Taken::into_inner`] to end it uncharged (rejected).
//!
//! # Bounds and allocation
//! Tenants are looked up in a small vector (linear scan; the queue is worker-local and off the
//! routing hot path). At most `max_tenants` named tenants have their own lane (default
//! [`DEFAULT_MAX_TENANTS`]). A new tenant past the bound takes over the idle lane with the
//! smallest counter (its counter is forgotten: it would be lifted on its return anyway, unless
//! it had been served more than the others); when every lane is backlogged, the newcomer's
//! items go to the anonymous lane, shared with tasks that name no tenant, and are served in
//! fair order as that lane's. Lanes and their buffers are reused, so once the queue has seen
//! its tenants and its peak depth, pushing and popping allocate nothing.
use std::collections::VecDeque;
use std::num::NonZeroU32;

use crate::model::TenantId;

/// Weight of one input (prompt) token in a task's work.
pub const INPUT_TOKEN_WEIGHT: u64 = 1;
/// Weight of one output token in a task's work.
pub const OUTPUT_TOKEN_WEIGHT: u64 = 2;
/// Named tenants a [`FairQueue::new`] tracks with a lane of their own.
pub const DEFAULT_MAX_TENANTS: usize = 1024;

/// Counters hold work × 2¹⁶ / weight, so a weight that does not divide the work keeps the
/// fraction (the rounding error is below 2⁻¹⁶ of a token per item).
const SCALE_SHIFT: u32 = 16;
/// When a counter passes this, every counter is lowered by the same amount (only their
/// differences matter); far from `u64::MAX`, so no charge can overflow before the rebase.
const REBASE_ABOVE: u64 = 1 << 62;

/// A task's token work for fairness: `input × 1 + output × 2` (output being the estimate).
///
/// # Examples
/// ```
/// assert_eq!(switchyard::fairness::token_work(1000, 200), 1400);
/// ```
pub fn token_work(input_tokens: u32, output_tokens: u32) -> u64 {
    input_tokens as u64 * INPUT_TOKEN_WEIGHT + output_tokens as u64 * OUTPUT_TOKEN_WEIGHT
}

/// One tenant's FIFO and counter.
#[derive(Debug)]
struct Lane<T> {
    /// Scaled, weighted work served (plus lifts).
    counter: u64,
    weight: NonZeroU32,
    /// Queued items with their work, oldest first.
    items: VecDeque<(u64, T)>,
}

impl<T> Lane<T> {
    fn new(weight: NonZeroU32) -> Self {
        Self {
            counter: 0,
            weight,
            items: VecDeque::new(),
        }
    }
}

/// A queue that serves tenants fairly by token work (Virtual Token Counter); see the
/// [module docs](crate::fairness) for the rules.
///
/// Not thread-safe by design: each dispatcher worker owns its queues.
///
/// # Examples
/// ```
/// use switchyard::TenantId;
/// use switchyard::fairness::FairQueue;
///
/// let (flood, other) = (Some(TenantId(1)), Some(TenantId(2)));
/// let mut q = FairQueue::new();
/// for i in 0..100 {
///     q.push(flood, 300, ("flood", i)); // one tenant queues 100 tasks of 300 tokens
/// }
/// q.push(other, 300, ("other", 0));
/// q.push(other, 300, ("other", 1));
/// // Both are backlogged: service alternates instead of draining the flood first.
/// let order: Vec<_> = (0..4).map(|_| q.pop().unwrap()).collect();
/// assert_eq!(order, [("flood", 0), ("other", 0), ("flood", 1), ("other", 1)]);
///
/// // A task that could not be served goes back to its tenant's head, uncharged.
/// let taken = q.take().unwrap();
/// assert_eq!(*taken.item(), ("flood", 2));
/// q.requeue_front(taken);
/// assert_eq!(q.pop(), Some(("flood", 2)));
/// assert_eq!(q.len(), 97);
/// ```
#[derive(Debug)]
pub struct FairQueue<T> {
    /// Lane 0 is the anonymous tenant (and the overflow past `max_tenants`).
    lanes: Vec<Lane<T>>,
    /// `keys[i]`: the tenant owning lane `i` (`None` for lane 0).
    keys: Vec<Option<TenantId>>,
    /// Lanes with queued items (unordered).
    active: Vec<u32>,
    /// Configured weights (tenants without one weigh 1).
    weights: Vec<(TenantId, NonZeroU32)>,
    max_tenants: usize,
    len: usize,
    /// Counter of the last lane that stopped being backlogged: the lift floor when none is.
    last_left: u64,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// An item taken from a [`FairQueue`] and not charged yet: hand it back with
/// [`charge`](FairQueue::charge) if it was served, [`requeue_front`](FairQueue::requeue_front)
/// if it was not, or end it uncharged with [`into_inner`](Taken::into_inner).
#[must_use = "charge it if it was served, requeue it if not, or end it with into_inner"]
#[derive(Debug)]
pub struct Taken<T> {
    item: T,
    work: u64,
    lane: u32,
    key: Option<TenantId>,
}

impl<T> Taken<T> {
    /// The item.
    pub fn item(&self) -> &T {
        &self.item
    }

    /// The work it will be charged.
    pub fn work(&self) -> u64 {
        self.work
    }

    /// Ends it without charging its tenant (it was not served: rejected, expired).
    pub fn into_inner(self) -> T {
        self.item
    }
}

const ONE: NonZeroU32 = NonZeroU32::MIN;

impl<T> FairQueue<T> {
    /// An empty queue tracking up to [`DEFAULT_MAX_TENANTS`] named tenants.
    pub fn new() -> Self {
        Self::with_max_tenants(DEFAULT_MAX_TENANTS)
    }

    /// An empty queue giving at most `max` named tenants a lane of their own (see "Bounds"
    /// in the [module docs](crate::fairness); 0 puts everyone in the anonymous lane: FIFO).
    pub fn with_max_tenants(max: usize) -> Self {
        Self {
            lanes: vec![Lane::new(ONE)],
            keys: vec![None],
            active: Vec::new(),
            weights: Vec::new(),
            max_tenants: max,
            len: 0,
            last_left: 0,
        }
    }

    /// Sets `tenant`'s weight: its counter grows by work / weight, so a tenant of weight 2
    /// gets twice the token work of a tenant of weight 1 while both are backlogged. Applies
    /// to items charged from now on; tenants without a weight weigh 1.
    pub fn set_weight(&mut self, tenant: TenantId, weight: NonZeroU32) {
        match self.weights.iter_mut().find(|(t, _)| *t == tenant) {
            Some(w) => w.1 = weight,
            None => self.weights.push((tenant, weight)),
        }
        if let Some(lane) = self.find(Some(tenant)) {
            if lane != 0 {
                self.lanes[lane].weight = weight;
            }
        }
    }

    /// Queues `item` at the back of `tenant`'s FIFO (`None`: the anonymous tenant); `work` is
    /// what serving it will add to the tenant's counter (e.g. [`token_work`]).
    pub fn push(&mut self, tenant: Option<TenantId>, work: u64, item: T) {
        let lane = self.lane_for(tenant);
        if self.lanes[lane].items.is_empty() {
            self.backlog(lane, true);
        }
        self.lanes[lane].items.push_back((work, item));
        self.len += 1;
    }

    /// Takes the next item in fair order and charges its tenant: the item is served.
    pub fn pop(&mut self) -> Option<T> {
        let taken = self.take()?;
        Some(self.charge(taken))
    }

    /// The item [`take`](Self::take) or [`pop`](Self::pop) would return next.
    pub fn peek(&self) -> Option<&T> {
        let (_, lane) = self.next_lane()?;
        self.lanes[lane].items.front().map(|(_, t)| t)
    }

    /// Takes the next item in fair order (the head of the backlogged tenant with the smallest
    /// counter) without charging it yet.
    pub fn take(&mut self) -> Option<Taken<T>> {
        let (k, lane) = self.next_lane()?;
        let (work, item) = self.lanes[lane].items.pop_front()?;
        self.len -= 1;
        if self.lanes[lane].items.is_empty() {
            self.active.swap_remove(k);
            self.last_left = self.lanes[lane].counter;
        }
        Some(Taken {
            item,
            work,
            lane: lane as u32,
            key: self.keys[lane],
        })
    }

    /// The taken item was served: charges its work (over its weight) to its tenant and
    /// returns the item.
    pub fn charge(&mut self, taken: Taken<T>) -> T {
        if let Some(lane) = self.owned(taken.lane, taken.key) {
            let l = &mut self.lanes[lane];
            let delta = ((taken.work as u128) << SCALE_SHIFT) / l.weight.get() as u128;
            l.counter = l
                .counter
                .saturating_add(u64::try_from(delta).unwrap_or(u64::MAX));
            let counter = l.counter;
            if l.items.is_empty() {
                self.last_left = counter;
            }
            if counter > REBASE_ABOVE {
                self.rebase(counter);
            }
        }
        // A tenant whose lane was handed to another meanwhile has no counter left to charge.
        taken.item
    }

    /// The taken item was not served: puts it back at the head of its tenant's FIFO,
    /// uncharged, so it keeps its place (its tenant's counter is as before the take).
    pub fn requeue_front(&mut self, taken: Taken<T>) {
        let (lane, fresh) = match self.owned(taken.lane, taken.key) {
            Some(lane) => (lane, false),
            None => (self.lane_for(taken.key), true),
        };
        if self.lanes[lane].items.is_empty() {
            // The item never left in the fairness sense: no lift, unless the tenant lost its
            // lane (and counter) meanwhile.
            self.backlog(lane, fresh);
        }
        self.lanes[lane].items.push_front((taken.work, taken.item));
        self.len += 1;
    }

    /// Removes items from the front of every tenant's FIFO while `remove` holds for them,
    /// handing each to `out`, uncharged; returns how many. Items behind a kept one stay: this
    /// is exact for a property that holds in each tenant's FIFO order, such as a deadline
    /// (items pushed with non-decreasing deadlines expire front first).
    pub fn remove_front_while(
        &mut self,
        mut remove: impl FnMut(&T) -> bool,
        mut out: impl FnMut(T),
    ) -> usize {
        let mut removed = 0;
        let mut k = 0;
        while k < self.active.len() {
            let lane = self.active[k] as usize;
            let l = &mut self.lanes[lane];
            while l.items.front().is_some_and(|(_, t)| remove(t)) {
                if let Some((_, item)) = l.items.pop_front() {
                    removed += 1;
                    out(item);
                }
            }
            if l.items.is_empty() {
                self.last_left = l.counter;
                self.active.swap_remove(k);
            } else {
                k += 1;
            }
        }
        self.len -= removed;
        removed
    }

    /// Every queued item, tenant by tenant (each tenant's in FIFO order; tenants in no
    /// particular order).
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.lanes
            .iter()
            .flat_map(|l| l.items.iter().map(|(_, t)| t))
    }

    /// Removes every item, uncharged (for shutdown), tenant by tenant as [`iter`](Self::iter).
    /// The queue is empty once the iterator is dropped, even if not run to its end; counters
    /// are kept.
    pub fn drain(&mut self) -> Drain<'_, T> {
        Drain {
            queue: self,
            lane: 0,
        }
    }

    /// Items queued (taken items not counted).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no item is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tenants with queued items (the anonymous lane counts as one).
    pub fn backlogged(&self) -> usize {
        self.active.len()
    }

    /// `tenant`'s counter in units of work (weighted work served plus lifts), if the queue
    /// tracks it; `None` reads the anonymous lane.
    pub fn counter(&self, tenant: Option<TenantId>) -> Option<u64> {
        self.find(tenant)
            .map(|lane| self.lanes[lane].counter >> SCALE_SHIFT)
    }

    // ===== internals =====

    fn find(&self, tenant: Option<TenantId>) -> Option<usize> {
        match tenant {
            None => Some(0),
            Some(_) => self.keys.iter().position(|k| *k == tenant),
        }
    }

    /// `lane` if `key` still owns it, else `key`'s current lane.
    fn owned(&self, lane: u32, key: Option<TenantId>) -> Option<usize> {
        let lane = lane as usize;
        if self.keys.get(lane) == Some(&key) {
            Some(lane)
        } else {
            self.find(key)
        }
    }

    /// `tenant`'s lane, assigning one (new, or an idle one taken over) if it has none.
    fn lane_for(&mut self, tenant: Option<TenantId>) -> usize {
        let Some(t) = tenant else { return 0 };
        if let Some(lane) = self.find(tenant) {
            return lane;
        }
        let weight = self
            .weights
            .iter()
            .find(|(w, _)| *w == t)
            .map_or(ONE, |&(_, w)| w);
        if self.lanes.len() <= self.max_tenants {
            self.lanes.push(Lane::new(weight));
            self.keys.push(tenant);
            return self.lanes.len() - 1;
        }
        // Full: take over the idle lane whose counter matters least, if any.
        let idle = (1..self.lanes.len())
            .filter(|&i| self.lanes[i].items.is_empty())
            .min_by_key(|&i| self.lanes[i].counter);
        match idle {
            Some(lane) => {
                self.keys[lane] = tenant;
                self.lanes[lane].counter = 0;
                self.lanes[lane].weight = weight;
                lane
            }
            None => 0,
        }
    }

    /// The empty `lane` gets an item: it joins the backlogged set, lifted if `lift`.
    fn backlog(&mut self, lane: usize, lift: bool) {
        if lift {
            let floor = self
                .active
                .iter()
                .map(|&i| self.lanes[i as usize].counter)
                .min()
                .unwrap_or(self.last_left);
            let c = &mut self.lanes[lane].counter;
            *c = (*c).max(floor);
        }
        self.active.push(lane as u32);
    }

    /// The backlogged lane with the smallest counter (ties: the lowest lane), and its place in
    /// `active`.
    fn next_lane(&self) -> Option<(usize, usize)> {
        self.active
            .iter()
            .enumerate()
            .min_by_key(|&(_, &i)| (self.lanes[i as usize].counter, i))
            .map(|(k, &i)| (k, i as usize))
    }

    /// Lowers every counter by the smallest that still matters (the backlogged ones' and
    /// `charged`), keeping their differences; counters below it become 0, which changes
    /// nothing, since such a tenant is lifted above them when it returns.
    fn rebase(&mut self, charged: u64) {
        let base = self
            .active
            .iter()
            .map(|&i| self.lanes[i as usize].counter)
            .fold(charged, u64::min);
        for l in &mut self.lanes {
            l.counter = l.counter.saturating_sub(base);
        }
        self.last_left = self.last_left.saturating_sub(base);
    }
}

/// The iterator of [`FairQueue::drain`].
#[derive(Debug)]
pub struct Drain<'a, T> {
    queue: &'a mut FairQueue<T>,
    lane: usize,
}

impl<T> Iterator for Drain<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        loop {
            let lane = self.queue.lanes.get_mut(self.lane)?;
            if let Some((_, item)) = lane.items.pop_front() {
                self.queue.len -= 1;
                return Some(item);
            }
            self.lane += 1;
        }
    }
}

impl<T> Drop for Drain<'_, T> {
    fn drop(&mut self) {
        for l in &mut self.queue.lanes {
            l.items.clear();
        }
        self.queue.active.clear();
        self.queue.len = 0;
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const A: Option<TenantId> = Some(TenantId(1));
    const B: Option<TenantId> = Some(TenantId(2));

    fn w(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    /// Deterministic work sizes in 1..=max.
    fn sizes(seed: u64, max: u64) -> impl Iterator<Item = u64> {
        let mut x = seed | 1;
        std::iter::from_fn(move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Some(1 + x % max)
        })
    }

    #[test]
    fn serves_the_smallest_counter_first() {
        let mut q = FairQueue::new();
        // A's tasks are ten times B's: B is served ten times for each of A's.
        for i in 0..3 {
            q.push(A, 100, ('a', i));
        }
        for i in 0..30 {
            q.push(B, 10, ('b', i));
        }
        let order: String = std::iter::from_fn(|| q.pop()).map(|(t, _)| t).collect();
        let expected = format!("a{}a{}a{}", "b".repeat(10), "b".repeat(10), "b".repeat(10));
        assert_eq!(order, expected);
        assert_eq!(q.counter(A), Some(300));
        assert_eq!(q.counter(B), Some(300));
        assert!(q.is_empty());
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn a_flood_gets_no_more_than_its_share_of_token_work() {
        const MAX_WORK: u64 = 500;
        let mut q = FairQueue::new();
        let mut a_sizes = sizes(7, MAX_WORK);
        let mut b_sizes = sizes(11, MAX_WORK);
        for i in 0..1000 {
            q.push(A, a_sizes.next().unwrap(), (A, i));
        }
        for i in 0..10 {
            q.push(B, b_sizes.next().unwrap(), (B, i));
        }
        let (mut served_a, mut served_b, mut b_left) = (0u64, 0u64, 10);
        let mut a_before_b_done = 0;
        while b_left > 0 {
            let peeked = *q.peek().unwrap();
            let taken = q.take().unwrap();
            assert_eq!(*taken.item(), peeked);
            let work = taken.work();
            let (tenant, _) = q.charge(taken);
            if tenant == A {
                served_a += work;
                a_before_b_done += 1;
            } else {
                served_b += work;
                b_left -= 1;
            }
            // Both backlogged until B's last is served: neither leads by more than one task.
            assert!(
                served_a.abs_diff(served_b) <= MAX_WORK,
                "A {served_a} vs B {served_b}"
            );
        }
        // FIFO would have served all 1000 of A's first.
        assert!(
            a_before_b_done <= 20,
            "{a_before_b_done} of A's served first"
        );
        assert_eq!(q.len(), 1000 - a_before_b_done);
    }

    #[test]
    fn equal_work_alternates() {
        let mut q = FairQueue::new();
        for i in 0..1000 {
            q.push(A, 50, (A, i));
        }
        for i in 0..10 {
            q.push(B, 50, (B, i));
        }
        let first: Vec<_> = (0..20).map(|_| q.pop().unwrap().0).collect();
        let alternating: Vec<_> = (0..20).map(|i| if i % 2 == 0 { A } else { B }).collect();
        assert_eq!(first, alternating);
        // Then only A is left.
        assert!(std::iter::from_fn(|| q.pop()).all(|(t, _)| t == A));
    }

    #[test]
    fn weights_share_in_proportion() {
        let mut q = FairQueue::new();
        q.set_weight(TenantId(1), w(3));
        for i in 0..400 {
            q.push(A, 10, (A, i));
            q.push(B, 10, (B, i));
        }
        let (mut a, mut b) = (0u64, 0u64);
        for _ in 0..400 {
            match q.pop().unwrap().0 {
                t if t == A => a += 10,
                _ => b += 10,
            }
            // A's counter grows by a third of its work: it gets three times B's work.
            assert!(a.abs_diff(3 * b) <= 30, "A {a} vs B {b}");
        }
        assert_eq!((a, b), (300 * 10, 100 * 10));
        // A weight set later applies to later charges; the anonymous lane weighs 1.
        q.set_weight(TenantId(2), w(2));
        // A's 3000 tokens at weight 3 and B's 1000 at weight 1: both counters at 1000 (A's
        // possibly a hair below, the floor of its scaled sum), so A goes next (ties: the
        // lower lane), then B, charged at its new weight.
        assert_eq!(q.counter(B), Some(1000));
        assert!(q.counter(A).unwrap() <= 1000);
        let taken = q.take().unwrap();
        assert_eq!(taken.item().0, A);
        q.charge(taken);
        assert!(q.counter(A).unwrap() > 1000, "A charged 10 / 3");
        let taken = q.take().unwrap();
        assert_eq!(taken.item().0, B, "B is behind A now");
        q.charge(taken);
        assert_eq!(q.counter(B), Some(1005), "10 tokens at weight 2");
    }

    #[test]
    fn fractional_weights_keep_their_fraction() {
        let mut q = FairQueue::new();
        q.set_weight(TenantId(1), w(3));
        for _ in 0..3 {
            q.push(A, 1, ());
        }
        while q.pop().is_some() {}
        // 3 × 1/3 is 1, not 3 × 0.
        assert_eq!(q.counter(A), Some(0)); // 0.99998…: floor of the scaled sum
        assert!(q.lanes[1].counter >= (1 << SCALE_SHIFT) - 3);
    }

    #[test]
    fn a_returning_tenant_is_lifted_and_banks_no_credit() {
        let mut q = FairQueue::new();
        for i in 0..1000 {
            q.push(A, 10, (A, i));
        }
        q.push(B, 10, (B, 0));
        q.pop();
        q.pop(); // B's only task; B is idle now
        assert_eq!(q.counter(B), Some(10));
        for _ in 0..100 {
            assert_eq!(q.pop().unwrap().0, A); // A alone: 1000 more work
        }
        let a = q.counter(A).unwrap();
        assert_eq!(a, 1010);
        for i in 1..=10 {
            q.push(B, 10, (B, i));
        }
        // Lifted to A's counter: B did not bank the 1000 tokens it was away for.
        assert_eq!(q.counter(B), Some(a));
        let next: Vec<_> = (0..6).map(|_| q.pop().unwrap().0).collect();
        assert_eq!(next, [A, B, A, B, A, B], "alternates, no burst of B");

        // A tenant already ahead keeps its lead: the lift only raises.
        let mut q = FairQueue::new();
        for _ in 0..100 {
            q.push(A, 10, 'a');
        }
        q.push(B, 500, 'B');
        assert_eq!((q.pop(), q.pop()), (Some('a'), Some('B'))); // B is idle, 490 ahead
        q.push(B, 10, 'b');
        assert_eq!(q.counter(B), Some(500));
        assert!(
            (0..50).all(|_| q.pop() == Some('a')),
            "A catches up first (ties: A)"
        );
        assert_eq!(q.pop(), Some('b'));
    }

    #[test]
    fn with_nothing_backlogged_the_last_to_leave_sets_the_floor() {
        let mut q = FairQueue::new();
        q.push(A, 300, 0);
        q.pop();
        assert!(q.is_empty());
        // B arrives when nothing waits: lifted to A's counter, the last to leave.
        q.push(B, 10, 1);
        assert_eq!(q.counter(B), Some(300));
    }

    #[test]
    fn a_requeued_item_keeps_its_place_and_is_charged_once() {
        let mut q = FairQueue::new();
        q.push(A, 100, 'x');
        q.push(A, 100, 'y');
        q.push(B, 100, 'z');
        for _ in 0..100 {
            let taken = q.take().unwrap();
            assert_eq!(*taken.item(), 'x');
            assert_eq!(q.len(), 2);
            q.requeue_front(taken); // still saturated
        }
        assert_eq!((q.counter(A), q.counter(B), q.len()), (Some(0), Some(0), 3));
        let taken = q.take().unwrap();
        assert_eq!(q.charge(taken), 'x');
        assert_eq!(q.counter(A), Some(100));
        // A rejected item is not charged either.
        let taken = q.take().unwrap();
        assert_eq!(taken.into_inner(), 'z');
        assert_eq!(q.counter(B), Some(0));
        // The only item of a tenant, taken and requeued: no lift, same place.
        let taken = q.take().unwrap();
        q.requeue_front(taken);
        assert_eq!(q.counter(A), Some(100));
        assert_eq!(q.pop(), Some('y'));
        assert_eq!(q.counter(A), Some(200));
    }

    #[test]
    fn anonymous_tasks_share_one_tenant() {
        let mut q = FairQueue::new();
        for i in 0..10 {
            q.push(None, 10, (None, i));
        }
        for i in 0..2 {
            q.push(A, 10, (A, i));
        }
        let first: Vec<_> = (0..4).map(|_| q.pop().unwrap().0).collect();
        assert_eq!(first, [None, A, None, A]);
        assert_eq!(q.counter(None), Some(20));
        assert_eq!(q.backlogged(), 1);
    }

    #[test]
    fn past_the_bound_tenants_take_over_idle_lanes_or_share_the_anonymous_one() {
        let mut q = FairQueue::with_max_tenants(2);
        let c = Some(TenantId(3));
        q.push(A, 10, 'a');
        q.push(B, 10, 'b');
        q.push(c, 10, 'c'); // every lane busy: shares the anonymous lane
        assert_eq!(q.counter(c), None);
        assert_eq!(q.backlogged(), 3);
        let mut got: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        got.sort_unstable();
        assert_eq!(got, ['a', 'b', 'c']);
        assert_eq!(q.counter(None), Some(10));
        // A and B idle now: C takes over the idle lane with the smallest counter.
        q.push(A, 5, 'a');
        q.pop();
        q.push(c, 10, 'c');
        assert_eq!(q.counter(B), None, "B's lane went to C");
        assert_eq!(q.counter(c), Some(15), "lifted to the last to leave");
        q.set_weight(TenantId(3), w(2));
        assert_eq!(q.lanes[2].weight, w(2));
        // Zero named tenants: plain FIFO through the anonymous lane.
        let mut fifo = FairQueue::with_max_tenants(0);
        for i in 0..6u32 {
            fifo.push(Some(TenantId(i % 2)), 10 + i as u64, i);
        }
        assert!((0..6).all(|i| fifo.pop() == Some(i)));
    }

    #[test]
    fn a_requeue_after_the_lane_changed_hands_still_lands() {
        let mut q = FairQueue::with_max_tenants(1);
        q.push(A, 10, 'a');
        let taken = q.take().unwrap();
        q.push(B, 10, 'b'); // A's lane is idle: B takes it over
        assert_eq!(q.counter(A), None);
        q.requeue_front(taken); // A has no lane; every one is busy: the anonymous lane
        assert_eq!(q.len(), 2);
        let taken = q.take().unwrap();
        let item = q.charge(taken); // whichever it was, charging it must not misfire
        assert_eq!(q.len(), 1);
        let rest = q.pop().unwrap();
        let mut both = [item, rest];
        both.sort_unstable();
        assert_eq!(both, ['a', 'b'], "each item comes out exactly once");
        assert!(q.is_empty());
        // Charging an item whose tenant lost its lane charges nobody.
        let mut q = FairQueue::with_max_tenants(1);
        q.push(A, 10, 'a');
        let taken = q.take().unwrap();
        q.push(B, 10, 'b');
        assert_eq!(q.charge(taken), 'a');
        assert_eq!(q.counter(B), Some(0));
    }

    #[test]
    fn expired_heads_leave_from_every_tenant() {
        let mut q = FairQueue::new();
        // (deadline, id): each tenant's deadlines grow in FIFO order.
        for (t, d) in [(A, 1), (A, 2), (A, 9), (B, 1), (B, 8), (None, 3)] {
            q.push(t, 10, (d, t));
        }
        let mut shed = Vec::new();
        let n = q.remove_front_while(|&(d, _)| d <= 3, |x| shed.push(x));
        assert_eq!(n, 4);
        shed.sort_unstable_by_key(|&(d, t)| (d, t.map(|t| t.0)));
        assert_eq!(shed, [(1, A), (1, B), (2, A), (3, None)]);
        assert_eq!((q.len(), q.backlogged()), (2, 2));
        assert_eq!(q.counter(A), Some(0), "shedding charges nothing");
        let mut rest: Vec<_> = q.iter().copied().collect();
        rest.sort_unstable_by_key(|&(d, _)| d);
        assert_eq!(rest, [(8, B), (9, A)]);
        assert_eq!(q.remove_front_while(|_| true, drop), 2);
        assert!(q.is_empty() && q.backlogged() == 0);
    }

    #[test]
    fn drain_empties_even_when_dropped_early() {
        let mut q = FairQueue::new();
        for i in 0..10 {
            q.push(if i % 2 == 0 { A } else { None }, 1, i);
        }
        let mut all: Vec<_> = q.drain().collect();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert!(q.is_empty());
        for i in 0..10 {
            q.push(if i % 2 == 0 { A } else { B }, 1, i);
        }
        assert_eq!(q.drain().take(3).count(), 3);
        assert!(q.is_empty() && q.backlogged() == 0 && q.pop().is_none());
        q.push(B, 1, 42);
        assert_eq!(q.pop(), Some(42));
    }

    #[test]
    fn counters_rebase_before_they_overflow() {
        let mut q = FairQueue::new();
        q.push(A, 10, 'a');
        q.push(B, 10, 'b');
        q.push(A, 10, 'a');
        q.lanes[1].counter = REBASE_ABOVE - 5;
        q.lanes[2].counter = REBASE_ABOVE - 3;
        assert_eq!(q.pop(), Some('a')); // A passes the limit: everything moves down
        assert!(q.lanes.iter().all(|l| l.counter < 1 << 40));
        assert_eq!(
            q.lanes[1].counter - q.lanes[2].counter,
            (10 << SCALE_SHIFT) - 2,
            "differences kept"
        );
        assert_eq!(q.pop(), Some('b'));
        assert_eq!(q.pop(), Some('a'));
    }
}
