//! A node's KV prefix cache in the discrete-event simulator: an LRU set of 512-token prefix
//! blocks (the Mooncake trace's `hash_ids`).
//!
//! A block id names a block *together with every block before it*, so a request reuses the
//! longest run of its leading blocks that the cache holds. When a request's blocks are
//! touched, earlier blocks are made more recent than later ones: eviction then takes a
//! prefix's tail before its head, as a radix-tree cache evicts leaves before their parents.
use std::collections::{BTreeMap, HashMap};

use switchyard::NodeSpec;

/// Tokens per prefix block.
pub const BLOCK_TOKENS: u32 = 512;

/// An LRU set of prefix blocks with a capacity in blocks.
///
/// # Examples
/// ```
/// use switchyard_sim::PrefixCache;
/// let mut c = PrefixCache::new(3);
/// c.touch(&[1, 2, 3]);
/// assert_eq!(c.matched_prefix(&[1, 2, 9]), 2);
/// c.touch(&[7]); // evicts the least recent: block 3, the tail of the first prefix
/// assert_eq!(c.matched_prefix(&[1, 2, 3]), 2);
/// ```
#[derive(Debug, Clone, Default)]
pub struct PrefixCache {
    capacity: usize,
    stamp_of: HashMap<u64, u64>,
    by_stamp: BTreeMap<u64, u64>,
    clock: u64,
}

impl PrefixCache {
    /// An empty cache holding at most `capacity_blocks` blocks.
    pub fn new(capacity_blocks: usize) -> Self {
        Self {
            capacity: capacity_blocks,
            ..Self::default()
        }
    }

    /// The blocks a node's KV memory holds: `memory_mb / (kv_mb_per_1k_tokens × 0.512)`.
    pub fn blocks_for(spec: &NodeSpec) -> usize {
        let per_block = spec.kv_mb_per_1k_tokens * BLOCK_TOKENS as f64 / 1000.0;
        if per_block > 0.0 && per_block.is_finite() {
            (spec.memory_mb as f64 / per_block) as usize
        } else {
            0
        }
    }

    /// An empty cache sized by [`blocks_for`](Self::blocks_for).
    pub fn for_node(spec: &NodeSpec) -> Self {
        Self::new(Self::blocks_for(spec))
    }

    /// Most blocks held after an eviction.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Blocks held now.
    pub fn len(&self) -> usize {
        self.stamp_of.len()
    }

    /// Whether no block is held.
    pub fn is_empty(&self) -> bool {
        self.stamp_of.is_empty()
    }

    /// Whether `block` is held.
    pub fn contains(&self, block: u64) -> bool {
        self.stamp_of.contains_key(&block)
    }

    /// How many leading blocks of `blocks` are held (the cache is not changed).
    pub fn matched_prefix(&self, blocks: &[u64]) -> usize {
        blocks.iter().take_while(|b| self.contains(**b)).count()
    }

    /// Marks `blocks` most recently used (inserting missing ones), then evicts the least
    /// recently used blocks down to the capacity.
    pub fn touch(&mut self, blocks: &[u64]) {
        self.touch_without_eviction(blocks);
        self.evict_to(self.capacity);
    }

    /// As [`touch`](Self::touch) without evicting: the set may exceed its capacity until the
    /// next [`evict_to`](Self::evict_to) (an approximate router-side tree evicts periodically).
    pub fn touch_without_eviction(&mut self, blocks: &[u64]) {
        // The tail first, so the head ends up the most recent.
        for &b in blocks.iter().rev() {
            self.clock += 1;
            if let Some(old) = self.stamp_of.insert(b, self.clock) {
                self.by_stamp.remove(&old);
            }
            self.by_stamp.insert(self.clock, b);
        }
    }

    /// Evicts least recently used blocks until at most `max_blocks` remain.
    pub fn evict_to(&mut self, max_blocks: usize) {
        while self.stamp_of.len() > max_blocks {
            let Some((_, b)) = self.by_stamp.pop_first() else {
                break;
            };
            self.stamp_of.remove(&b);
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn lru_keeps_prefix_heads_and_recent_blocks() {
        let mut c = PrefixCache::new(3);
        c.touch(&[1, 2, 3]);
        assert_eq!((c.len(), c.matched_prefix(&[1, 2, 3, 4])), (3, 3));
        c.touch(&[1, 5]); // 1 refreshed, 5 added: the least recent, 3, goes
        assert_eq!(c.len(), 3);
        assert!(!c.contains(3) && c.contains(2) && c.contains(5));
        // A prefix longer than the cache keeps its head.
        let mut c = PrefixCache::new(2);
        c.touch(&[10, 11, 12, 13]);
        assert_eq!(c.matched_prefix(&[10, 11, 12]), 2);
        assert_eq!(c.matched_prefix(&[11]), 1);
        assert_eq!(c.matched_prefix(&[12]), 0);
        let mut c = PrefixCache::new(1);
        c.touch_without_eviction(&[1, 2, 3]);
        assert_eq!(c.len(), 3);
        c.evict_to(1);
        assert_eq!((c.len(), c.contains(1)), (1, true));
        assert!(PrefixCache::new(0).is_empty());
    }

    #[test]
    fn capacity_follows_kv_memory() {
        let spec = NodeSpec::new("n").memory(60_000, 160.0);
        assert_eq!(PrefixCache::blocks_for(&spec), 732);
        assert_eq!(PrefixCache::for_node(&spec).capacity(), 732);
        assert_eq!(
            PrefixCache::blocks_for(&NodeSpec::new("z").memory(100, 0.0)),
            0
        );
    }
}
