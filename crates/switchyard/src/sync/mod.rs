//! The one concurrency shim.
//!
//! Every other module imports atomics, `Arc`, the snapshot cell, the work-stealing deques and
//! the parker from here and never from `std::sync` directly. A normal build re-exports the real
//! primitives (`std.rs`); a build with `RUSTFLAGS="--cfg switchyard_loom"` swaps in loom's
//! atomics and lock-based stand-ins with the same API for what loom cannot model (`loom.rs`):
//! `arc_swap` and `crossbeam_deque` have no loom support, so our loom models check *our*
//! protocols (epochs, ledgers, parking, shutdown) on top of stand-ins that are obviously correct.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

#[cfg(not(switchyard_loom))]
mod std_impl;
#[cfg(not(switchyard_loom))]
pub(crate) use std_impl::*;

#[cfg(switchyard_loom)]
mod loom_impl;
#[cfg(switchyard_loom)]
pub(crate) use loom_impl::*;

pub(crate) use crossbeam_utils::CachePadded;

/// Starts a named thread (the dispatcher's workers and control thread).
pub(crate) fn spawn_named<F, T>(name: String, f: F) -> std::io::Result<thread::JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    thread::Builder::new().name(name).spawn(f)
}

/// Parks the current thread for at most `timeout` (under loom: until unparked).
pub(crate) fn park_timeout(timeout: std::time::Duration) {
    thread::park_timeout(timeout)
}

/// A number no earlier call returned (a dispatcher's id, the key of its callers' readers).
/// A std atomic under loom too: a static cannot hold loom's, and no model reads these.
pub(crate) fn unique_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    // Relaxed: only distinct values are needed.
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
