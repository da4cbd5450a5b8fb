//! Real primitives for normal builds.
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
pub(crate) use std::sync::{Arc, Mutex};
pub(crate) use std::thread;

pub(crate) use crossbeam_deque::{Injector, Steal, Stealer, Worker};
pub(crate) use crossbeam_utils::sync::{Parker, Unparker};

/// The identity here; under loom it wraps the value in loom's `Arc` (see `loom_impl.rs`).
#[inline]
pub(crate) fn arc_from_std<T: ?Sized>(value: std::sync::Arc<T>) -> Arc<T> {
    value
}

/// An atomically swapped `Arc<T>`: one writer stores, many readers load wait-free.
#[derive(Debug)]
pub(crate) struct SnapshotCell<T>(Arc<arc_swap::ArcSwap<T>>);

impl<T> SnapshotCell<T> {
    pub(crate) fn new(value: Arc<T>) -> Self {
        Self(Arc::new(arc_swap::ArcSwap::new(value)))
    }

    /// A short-lived guard; never hold it across a blocking call (arc-swap has 8 fast slots
    /// per thread).
    #[inline]
    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<T>> {
        self.0.load()
    }

    pub(crate) fn load_full(&self) -> Arc<T> {
        self.0.load_full()
    }

    pub(crate) fn store(&self, value: Arc<T>) {
        self.0.store(value)
    }

    /// A cached reader for one thread.
    pub(crate) fn reader(&self) -> SnapshotReader<T> {
        SnapshotReader(arc_swap::Cache::new(Arc::clone(&self.0)))
    }
}

/// A per-thread cached reader of a [`SnapshotCell`]: one pointer compare per load while the
/// snapshot is unchanged (≈1.4 ns here against ≈22 ns for a guard). It keeps the last
/// snapshot it saw alive until its next load.
pub(crate) struct SnapshotReader<T>(arc_swap::Cache<Arc<arc_swap::ArcSwap<T>>, Arc<T>>);

impl<T> SnapshotReader<T> {
    #[inline]
    pub(crate) fn load(&mut self) -> &Arc<T> {
        self.0.load()
    }
}

impl<T> std::fmt::Debug for SnapshotReader<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotReader")
    }
}
