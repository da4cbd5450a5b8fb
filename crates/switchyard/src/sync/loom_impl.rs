//! loom builds: loom's atomics, and lock-based stand-ins with the real API for the parts loom
//! cannot model (arc-swap, crossbeam-deque, crossbeam's parker). The stand-ins are obviously
//! linearizable, so a model failure points at our protocol, not at theirs.
pub(crate) use loom::sync::atomic::Ordering;
pub(crate) use loom::sync::{Arc, Mutex};
pub(crate) use seq_cst::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize};

/// loom's atomics, born with a `SeqCst` store of their initial value.
///
/// loom treats `SeqCst` accesses as `AcqRel` (its README, "Unsupported features"), with one
/// exception: a `SeqCst` load never returns a `SeqCst` store older than another `SeqCst`
/// store. Its initial value, though, is a plain store, so a `SeqCst` load could still return
/// it after a `SeqCst` write by another thread: a store-buffering outcome `SeqCst` forbids,
/// and exactly what the dispatcher's parking and shutdown protocols rule out with `SeqCst`
/// on `queued`/`sleepers`/`sleeping`/`shutdown`. Storing the initial value again with
/// `SeqCst` makes loom's `SeqCst` accesses to a location whose writes are all `SeqCst`
/// behave in the single order of the interleaving, without adding any synchronisation:
/// non-`SeqCst` accesses keep loom's full weak-memory exploration.
mod seq_cst {
    use loom::sync::atomic::{self as a, Ordering};

    macro_rules! atomic {
        ($name:ident, $t:ty) => {
            #[derive(Debug)]
            pub(crate) struct $name(a::$name);

            impl $name {
                pub(crate) fn new(v: $t) -> Self {
                    let inner = a::$name::new(v);
                    inner.store(v, Ordering::SeqCst);
                    Self(inner)
                }
            }

            impl Default for $name {
                fn default() -> Self {
                    Self::new(Default::default())
                }
            }

            impl std::ops::Deref for $name {
                type Target = a::$name;

                fn deref(&self) -> &a::$name {
                    &self.0
                }
            }
        };
    }

    atomic!(AtomicBool, bool);
    atomic!(AtomicUsize, usize);
    atomic!(AtomicU32, u32);
    atomic!(AtomicU64, u64);
}

/// `std::thread` as loom models it, plus what loom lacks.
pub(crate) mod thread {
    pub(crate) use loom::thread::{yield_now, Builder, JoinHandle};

    /// loom has no timed park: model the timeout as one that never fires within a model, so
    /// the thread waits for an `unpark` (which is what every caller relies on to stop).
    pub(crate) fn park_timeout(_timeout: std::time::Duration) {
        loom::thread::park();
    }
}

/// A loom `Arc` from a fresh std one: loom's `Arc` cannot be built from `&str` or coerced
/// to a trait object, std's can.
pub(crate) fn arc_from_std<T: ?Sized>(value: std::sync::Arc<T>) -> Arc<T> {
    Arc::from_std(value)
}

pub(crate) use crossbeam_deque::Steal;
use std::collections::VecDeque;

/// `ArcSwap` stand-in: a lock around an `Arc`.
#[derive(Debug)]
pub(crate) struct SnapshotCell<T>(Arc<loom::sync::RwLock<Arc<T>>>);

impl<T> SnapshotCell<T> {
    pub(crate) fn new(value: Arc<T>) -> Self {
        Self(Arc::new(loom::sync::RwLock::new(value)))
    }
    pub(crate) fn load(&self) -> Arc<T> {
        Arc::clone(&self.0.read().unwrap())
    }
    pub(crate) fn load_full(&self) -> Arc<T> {
        self.load()
    }
    pub(crate) fn store(&self, value: Arc<T>) {
        *self.0.write().unwrap() = value;
    }
    pub(crate) fn reader(&self) -> SnapshotReader<T> {
        let current = self.load();
        SnapshotReader {
            cell: Arc::clone(&self.0),
            current,
        }
    }
}

/// `arc_swap::Cache` stand-in.
#[derive(Debug)]
pub(crate) struct SnapshotReader<T> {
    cell: Arc<loom::sync::RwLock<Arc<T>>>,
    current: Arc<T>,
}

impl<T> SnapshotReader<T> {
    pub(crate) fn load(&mut self) -> &Arc<T> {
        self.current = Arc::clone(&self.cell.read().unwrap());
        &self.current
    }
}

/// `crossbeam_deque::Worker` stand-in (FIFO).
#[derive(Debug)]
pub(crate) struct Worker<T>(Arc<Mutex<VecDeque<T>>>);

impl<T> Worker<T> {
    pub(crate) fn new_fifo() -> Self {
        Self(Arc::new(Mutex::new(VecDeque::new())))
    }
    #[allow(dead_code)] // crossbeam's API; the dispatcher only pushes through the injector
    pub(crate) fn push(&self, value: T) {
        self.0.lock().unwrap().push_back(value)
    }
    pub(crate) fn pop(&self) -> Option<T> {
        self.0.lock().unwrap().pop_front()
    }
    pub(crate) fn stealer(&self) -> Stealer<T> {
        Stealer(Arc::clone(&self.0))
    }
}

/// `crossbeam_deque::Stealer` stand-in.
#[derive(Debug)]
pub(crate) struct Stealer<T>(Arc<Mutex<VecDeque<T>>>);

impl<T> Clone for Stealer<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T> Stealer<T> {
    pub(crate) fn steal(&self) -> Steal<T> {
        match self.0.lock().unwrap().pop_front() {
            Some(v) => Steal::Success(v),
            None => Steal::Empty,
        }
    }
}

/// `crossbeam_deque::Injector` stand-in.
#[derive(Debug)]
pub(crate) struct Injector<T>(Mutex<VecDeque<T>>);

impl<T> Injector<T> {
    pub(crate) fn new() -> Self {
        Self(Mutex::new(VecDeque::new()))
    }
    pub(crate) fn push(&self, value: T) {
        self.0.lock().unwrap().push_back(value)
    }
    /// Pops one task and moves about half of the rest into `dest`, as crossbeam's does (it
    /// takes a batch of up to half the queue), so that models with two workers explore a
    /// task stolen from another worker's local queue.
    pub(crate) fn steal_batch_and_pop(&self, dest: &Worker<T>) -> Steal<T> {
        let mut queue = self.0.lock().unwrap();
        let Some(first) = queue.pop_front() else {
            return Steal::Empty;
        };
        let batch = queue.len() / 2 + queue.len() % 2;
        if batch > 0 {
            let mut local = dest.0.lock().unwrap();
            local.extend(queue.drain(..batch));
        }
        Steal::Success(first)
    }
}

/// `crossbeam_utils::sync::Parker` stand-in: a token guarded by a lock and a condvar.
#[derive(Debug)]
pub(crate) struct Parker(Arc<(Mutex<bool>, loom::sync::Condvar)>, Unparker);

/// `crossbeam_utils::sync::Unparker` stand-in.
#[derive(Debug, Clone)]
pub(crate) struct Unparker(Arc<(Mutex<bool>, loom::sync::Condvar)>);

impl Parker {
    pub(crate) fn new() -> Self {
        let inner = Arc::new((Mutex::new(false), loom::sync::Condvar::new()));
        Self(Arc::clone(&inner), Unparker(inner))
    }
    pub(crate) fn park(&self) {
        let (lock, cv) = &*self.0;
        let mut token = lock.lock().unwrap();
        while !*token {
            token = cv.wait(token).unwrap();
        }
        *token = false;
    }
    /// loom cannot model time: the timeout runs out at once. The token is taken if an unpark
    /// left one; otherwise the thread yields (letting the others run, as a real nap does)
    /// and returns, as a real `park_timeout` does when its time is up. A caller must not
    /// count on being woken here, and the worker's waiting list does not: it naps only
    /// to poll again.
    pub(crate) fn park_timeout(&self, _timeout: std::time::Duration) {
        let (lock, _) = &*self.0;
        let mut token = lock.lock().unwrap();
        if *token {
            *token = false;
            return;
        }
        drop(token);
        loom::thread::yield_now();
    }
    pub(crate) fn unparker(&self) -> &Unparker {
        &self.1
    }
}

impl Unparker {
    pub(crate) fn unpark(&self) {
        let (lock, cv) = &*self.0;
        *lock.lock().unwrap() = true;
        cv.notify_one();
    }
}
