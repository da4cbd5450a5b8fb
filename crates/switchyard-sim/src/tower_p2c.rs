//! tower's power-of-two-choices balancer as a peer of the router's decision:
//! `tower::balance::p2c::Balance` over `PendingRequests` endpoints that answer at once. One
//! [`TowerP2c::decide`] is what `route_N` times for the router: the decision (`poll_ready`,
//! which draws two ready endpoints and keeps the less loaded, then `call`) and its release
//! (the response future completes, which drops the pending-request handle). `switchyard
//! bench` and the criterion benches time both the same way.
use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use tower::balance::p2c::Balance;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PendingRequests};
use tower::Service;

/// An endpoint that answers every request at once.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint;

impl Service<u64> for Endpoint {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u64) -> Self::Future {
        ready(Ok(req))
    }
}

/// A waker that does nothing: every future here is ready when first polled.
struct Noop;

impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

type Endpoints = ServiceList<Vec<PendingRequests<Endpoint, CompleteOnResponse>>>;

/// A p2c balancer over `n` endpoints, driven without a runtime.
pub struct TowerP2c {
    balance: Balance<Endpoints, u64>,
    waker: Waker,
}

impl std::fmt::Debug for TowerP2c {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TowerP2c").finish_non_exhaustive()
    }
}

impl TowerP2c {
    /// A balancer over `n` endpoints (discovered on the first decision).
    pub fn new(n: usize) -> Self {
        let endpoints = (0..n)
            .map(|_| PendingRequests::new(Endpoint, CompleteOnResponse::default()))
            .collect();
        Self {
            balance: Balance::new(ServiceList::new(endpoints)),
            waker: Waker::from(Arc::new(Noop)),
        }
    }

    /// One decision and its release; returns the request echoed by the chosen endpoint.
    ///
    /// # Errors
    /// When the balancer is not ready (it has no endpoint) or the call fails.
    pub fn decide(&mut self, req: u64) -> Result<u64, String> {
        let mut cx = Context::from_waker(&self.waker);
        match self.balance.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Err(format!("tower balance: {e}")),
            Poll::Pending => return Err("tower balance not ready (no endpoint)".into()),
        }
        let mut fut = pin!(self.balance.call(req));
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(v)) => Ok(v),
            Poll::Ready(Err(e)) => Err(format!("tower call: {e}")),
            Poll::Pending => Err("tower call pending".into()),
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn decides_over_every_size_and_refuses_an_empty_set() {
        for n in [1, 2, 64, 4096] {
            let mut b = TowerP2c::new(n);
            for i in 0..100 {
                assert_eq!(b.decide(i), Ok(i));
            }
        }
        assert!(TowerP2c::new(0).decide(1).is_err());
    }
}
