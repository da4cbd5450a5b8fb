//! [`Ticket`]: a lease plus its task, for the dispatcher and failover; [`Completion`]: how
//! the task went.
use crate::lease::Lease;
use crate::model::{ModelChain, Outcome, RouteId, Task};
use crate::retry::MAX_ATTEMPTS;

/// How a dispatched task went, reported through [`Ticket::complete`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Completion {
    /// The outcome.
    pub outcome: Outcome,
    /// End-to-end latency the backend saw, ms.
    pub latency_ms: f64,
    /// Output tokens actually produced.
    pub output_tokens: u32,
}

impl Completion {
    /// A success after `latency_ms`.
    pub fn success(latency_ms: f64, output_tokens: u32) -> Self {
        Self {
            outcome: Outcome::Success,
            latency_ms,
            output_tokens,
        }
    }

    /// A failure of class `outcome` after `latency_ms`.
    pub fn failure(outcome: Outcome, latency_ms: f64) -> Self {
        Self {
            outcome,
            latency_ms,
            output_tokens: 0,
        }
    }
}

/// A dispatched task's claim check: complete it once, from any thread.
///
/// Dropping it without completing counts as [`Outcome::Abandoned`] and still releases the
/// lease, so a lost ticket never leaks capacity.
#[derive(Debug)]
#[must_use = "a ticket dropped without `complete` counts the task as abandoned"]
pub struct Ticket {
    pub(crate) lease: Option<Lease>,
    pub(crate) task: Task,
    /// Routes already tried (failover), oldest first.
    pub(crate) tried: [RouteId; MAX_ATTEMPTS],
    pub(crate) attempts: u8,
}

impl Ticket {
    /// A ticket for a task routed without the dispatcher (with a
    /// [`RouteReader`](crate::RouteReader)), so it can fail over and have its outcome counted
    /// like a dispatched one. (A dispatcher's `in_flight` counts only the tickets it made.)
    pub fn from_lease(lease: Lease, task: Task) -> Self {
        new_ticket(lease, task)
    }

    /// The task's id.
    pub fn task_id(&self) -> u64 {
        self.task.id
    }

    /// The task.
    pub fn task(&self) -> &Task {
        &self.task
    }

    /// Attempts so far (1 for a task on its first route).
    pub fn attempt(&self) -> u32 {
        self.attempts as u32 + 1
    }

    /// The route the task was reserved on.
    pub fn route(&self) -> Option<&ModelChain> {
        self.lease.as_ref().map(Lease::route)
    }

    /// The lease it holds.
    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    /// Ends the task: records the outcome on every stage, then releases the lease.
    pub fn complete(mut self, completion: Completion) {
        if let Some(lease) = self.lease.as_mut() {
            // Reserve, then settle: the token rate is charged the tokens really produced.
            lease.settle_tokens(completion.output_tokens);
        }
        self.finish(completion.outcome, completion.latency_ms);
    }

    fn finish(&mut self, outcome: Outcome, latency_ms: f64) {
        // The lease releases every stage, then counts the outcome on each node (the only
        // shared counters a ticket touches: no dispatcher-wide atomic per task).
        if let Some(lease) = self.lease.take() {
            lease.finish(outcome, latency_ms);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.finish(Outcome::Abandoned, f64::NAN);
    }
}

pub(crate) fn new_ticket(lease: Lease, task: Task) -> Ticket {
    Ticket {
        lease: Some(lease),
        task,
        tried: Default::default(),
        attempts: 0,
    }
}
