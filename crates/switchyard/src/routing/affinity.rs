//! Fleet-wide prefix-affinity hints: which node last took a task with a given affinity key.
//!
//! A direct-mapped table of packed words `tag << 21 | (node id + 1)`, shared by every
//! snapshot. Written (relaxed) when a lease is taken for a task with a key; read by the next
//! task with the same key, whose plan then evaluates that node beside its random draws and
//! puts it in the power-of-two-choices pair. The node still has to win on score (its
//! predicted prefill is discounted by `ScoringWeights::affinity`, but load, latency and cost
//! count as for any node), so affinity stays one soft factor: an overloaded node loses the
//! pair and the key moves on, with no threshold to oscillate around.
//!
//! Without the hint, P2C over a sampled pool would consider the node holding a task's prefix
//! only when it happened to be drawn (3 of 10 nodes on the default fleet).
use crate::model::{NodeId, Prefix};
use crate::sync::{AtomicU64, Ordering};

/// Entries: 16 Ki words, 128 KiB (2 under loom, whose models never use affinity keys).
const SLOTS: usize = if cfg!(switchyard_loom) { 2 } else { 1 << 14 };
const NODE_BITS: u32 = 21;
const NODE_MASK: u64 = (1 << NODE_BITS) - 1;

#[derive(Debug)]
pub(crate) struct AffinityHints {
    slots: Box<[AtomicU64]>,
}

#[inline]
fn index_and_tag(key: u64) -> (usize, u64) {
    let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((h >> 50) as usize % SLOTS, h >> NODE_BITS << NODE_BITS)
}

impl AffinityHints {
    pub(crate) fn new() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The node that last took a task with `key`, if the entry still holds it.
    #[inline]
    pub(crate) fn get(&self, key: u64) -> Option<NodeId> {
        let (i, tag) = index_and_tag(key);
        // Relaxed: a hint; a stale or overwritten entry only costs an affinity miss, and the
        // node it names is checked against the snapshot before use.
        let w = self.slots[i].load(Ordering::Relaxed);
        (w & !NODE_MASK == tag && w & NODE_MASK != 0).then(|| NodeId((w & NODE_MASK) as u32 - 1))
    }

    /// The node that last took a prompt sharing the deepest sampled prefix with `p`, and that
    /// depth in blocks (a binary search over `p`'s keys, as in [`NodeLive::prefix_depth`]).
    ///
    /// [`NodeLive::prefix_depth`]: crate::node::NodeLive
    #[inline]
    pub(crate) fn deepest(&self, p: &Prefix) -> Option<(NodeId, u32)> {
        let mut found = None;
        let depth = p.deepest(|k| match self.get(k) {
            Some(n) => {
                found = Some(n);
                true
            }
            None => false,
        });
        // `found` is the last hit of the search, which is the deepest one.
        found.filter(|_| depth > 0).map(|n| (n, depth))
    }

    /// Notes that `node` took a task with `key` (a store only when the entry changes, so a
    /// hot key does not bounce its cache line between cores).
    #[inline]
    pub(crate) fn set(&self, key: u64, node: NodeId) {
        let (i, tag) = index_and_tag(key);
        let w = tag | (node.0 as u64 + 1) & NODE_MASK;
        // Relaxed: a hint (see `get`).
        if self.slots[i].load(Ordering::Relaxed) != w {
            self.slots[i].store(w, Ordering::Relaxed);
        }
    }
}

#[cfg(all(test, not(switchyard_loom)))]
mod test {
    use super::*;

    #[test]
    fn remembers_the_last_node_per_key() {
        let h = AffinityHints::new();
        assert_eq!(h.get(42), None);
        h.set(42, NodeId(3));
        assert_eq!(h.get(42), Some(NodeId(3)));
        h.set(42, NodeId(0));
        assert_eq!(h.get(42), Some(NodeId(0)), "node 0 is not the empty entry");
        // Another key in the same entry evicts it; the tag keeps it from being mistaken.
        let (i, _) = index_and_tag(42);
        let other = (1..u64::MAX)
            .find(|&k| index_and_tag(k).0 == i && k != 42)
            .unwrap();
        h.set(other, NodeId(9));
        assert_eq!(h.get(42), None);
        assert_eq!(h.get(other), Some(NodeId(9)));
    }

    #[test]
    fn the_deepest_shared_prefix_names_its_node() {
        let h = AffinityHints::new();
        let shared = Prefix::from_blocks([1, 2, 3, 4, 5]);
        assert_eq!(h.deepest(&shared), None);
        // Node 1 served the system prompt only, node 2 the first four blocks.
        for k in Prefix::from_blocks([1, 9]).keys() {
            h.set(k, NodeId(1));
        }
        for k in Prefix::from_blocks([1, 2, 3, 4, 7]).keys() {
            h.set(k, NodeId(2));
        }
        assert_eq!(h.deepest(&shared), Some((NodeId(2), 4)));
        assert_eq!(
            h.deepest(&Prefix::from_blocks([1, 5])),
            Some((NodeId(2), 1))
        );
        assert_eq!(h.deepest(&Prefix::from_blocks([6])), None);
    }
}
