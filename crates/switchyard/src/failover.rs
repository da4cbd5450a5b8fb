//! Failover: a failed attempt's task moves to a route it has not tried.
//!
//! A task whose attempt fails goes back to the router with
//! [`Router::fail_over`](crate::Router::fail_over): the failure
//! is recorded on the nodes that served the attempt (so health sees it), and the task gets a
//! fresh route, planned on the current snapshot, that excludes every route it already tried.
//! Retries draw from the [retry budget](crate::retry), so an outage cannot multiply the load
//! by the retry count. Back-off is exponential with jitter and is returned,
//! not slept: the gateway schedules the next attempt. A task that runs out of attempts,
//! budget or routes ends with a [`FailoverError`] naming every route it tried, and is
//! counted once, as a failure.
use std::fmt;
use std::time::Duration;

use crate::error::RouteError;
use crate::lease::ticket::{new_ticket, Completion, Ticket};
use crate::lease::Lease;
use crate::model::{Outcome, RouteId, RouteOptions, Task};
use crate::retry::{RetryBudget, MAX_ATTEMPTS};
use crate::rng::with_rng;
use crate::routing::table::RoutingTable;
use crate::routing::{reserve, select};

/// A failed task's next attempt.
#[derive(Debug)]
pub struct Retry {
    /// The ticket for the new route (its lease is already reserved).
    pub ticket: Ticket,
    /// The routes planned for it.
    pub routes: RouteOptions,
    /// Wait this long before sending it (jittered exponential back-off).
    pub backoff: Duration,
}

/// Why a failed task was not retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailoverReason {
    /// The outcome was a success, or a client cancel: nothing to retry.
    NotRetryable,
    /// The task used all its attempts.
    AttemptsExhausted,
    /// The retry budget is spent (an outage is under way).
    BudgetExhausted,
    /// Every feasible route was already tried.
    AllRoutesTried,
    /// No route is feasible now.
    NoRoute(RouteError),
    /// The control thread had already reclaimed the attempt's lease past its timeout and
    /// counted the task as timed out: retrying would count it twice.
    Reclaimed,
}

/// A task that ends without success after failing over; the task is handed back.
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverError {
    /// The task.
    pub task: Task,
    /// Its last failure.
    pub outcome: Outcome,
    /// Every route it tried, in order.
    pub tried: Vec<RouteId>,
    /// Why it stops here.
    pub reason: FailoverReason,
}

impl fmt::Display for FailoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task {} failed ({}) after trying routes {:?}: ",
            self.task.id,
            self.outcome.name(),
            self.tried
        )?;
        match self.reason {
            FailoverReason::NotRetryable => f.write_str("not retryable"),
            FailoverReason::AttemptsExhausted => f.write_str("no attempts left"),
            FailoverReason::BudgetExhausted => f.write_str("retry budget exhausted"),
            FailoverReason::AllRoutesTried => f.write_str("every feasible route was tried"),
            FailoverReason::NoRoute(e) => write!(f, "{e}"),
            FailoverReason::Reclaimed => {
                f.write_str("the lease was reclaimed past its timeout (counted as a timeout)")
            }
        }
    }
}

impl std::error::Error for FailoverError {}

/// Records a failed attempt and moves the task to a route it has not tried, planned on
/// `table` (the current snapshot) and paid for from `budget`; see
/// [`Router::fail_over`](crate::Router::fail_over).
pub(crate) fn fail_over(
    table: &RoutingTable,
    budget: &RetryBudget,
    mut ticket: Ticket,
    failure: Completion,
) -> Result<Retry, FailoverError> {
    let Some(mut lease) = ticket.lease.take() else {
        return Err(give_up(
            &ticket,
            failure.outcome,
            FailoverReason::NotRetryable,
        ));
    };
    // The failed attempt produced `failure.output_tokens`: settle its rate reservation.
    lease.settle_tokens(failure.output_tokens);
    let attempt = ticket.attempts as usize;
    if attempt < MAX_ATTEMPTS {
        ticket.tried[attempt] = lease.route().route;
    }
    ticket.attempts = ticket.attempts.saturating_add(1);
    let end = |ticket: &Ticket, lease: Lease, reason| {
        lease.finish(failure.outcome, failure.latency_ms);
        Err(give_up(ticket, failure.outcome, reason))
    };
    // End the attempt's slab record before anything is planned: from here on the control
    // thread cannot reclaim it, so the task cannot end as a timeout while a retry is made for
    // it. (Checking `is_held` and ending the record only after planning left a window in
    // which a reclaim counted a timeout and the retry counted the task again.)
    if !lease.pin() {
        // Reclaimed: the task already ended, as a timeout; the slab counted this late end.
        return Err(give_up(&ticket, failure.outcome, FailoverReason::Reclaimed));
    }
    if !failure.outcome.is_failure() || failure.outcome == Outcome::Cancelled {
        return end(&ticket, lease, FailoverReason::NotRetryable);
    }
    if ticket.attempts as u32 >= budget.policy.max_attempts {
        return end(&ticket, lease, FailoverReason::AttemptsExhausted);
    }
    if !budget.try_take() {
        return end(&ticket, lease, FailoverReason::BudgetExhausted);
    }
    let mut routes = RouteOptions::default();
    let tried = &ticket.tried[..(ticket.attempts as usize).min(MAX_ATTEMPTS)];
    let planned = with_rng(|rng| select::plan(table, &ticket.task, rng, &mut routes));
    let next = planned.map_err(FailoverReason::NoRoute).and_then(|()| {
        routes.retain(|c| !tried.contains(&c.route.route));
        if routes.is_empty() {
            return Err(FailoverReason::AllRoutesTried);
        }
        reserve::allocate(table, &routes, &ticket.task, reserve::thread_lane())
            .map_err(FailoverReason::NoRoute)
    });
    match next {
        Ok(new_lease) => {
            // Health sees the failure; the task is counted once, when it finally ends.
            lease.finish_as(false, failure.outcome, failure.latency_ms);
            let unit = with_rng(|rng| rng.unit());
            let backoff = budget.policy.backoff(ticket.attempts as u32, unit);
            let mut next_ticket = new_ticket(new_lease, ticket.task);
            next_ticket.tried = ticket.tried;
            next_ticket.attempts = ticket.attempts;
            Ok(Retry {
                ticket: next_ticket,
                routes,
                backoff,
            })
        }
        Err(reason) => {
            budget.give_back();
            end(&ticket, lease, reason)
        }
    }
}

fn give_up(ticket: &Ticket, outcome: Outcome, reason: FailoverReason) -> FailoverError {
    FailoverError {
        task: ticket.task,
        outcome,
        tried: ticket.tried[..(ticket.attempts as usize).min(MAX_ATTEMPTS)].to_vec(),
        reason,
    }
}
