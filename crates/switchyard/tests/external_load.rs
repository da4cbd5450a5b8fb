//! `Router::set_external_load`: work other routers hold on a node counts in the score and
//! in admission from the next tick, and clears with (0, 0).
use switchyard::{ConfigError, NodeSpec, Priority, RouteError, Router, Task};

fn router() -> Router {
    Router::builder()
        .node(NodeSpec::new("a").max_concurrency(20))
        .node(NodeSpec::new("b").max_concurrency(20))
        .seed(7)
        .build()
        .unwrap()
}

fn head(r: &Router, opts: &switchyard::RouteOptions) -> String {
    let snap = r.snapshot();
    let id = opts.primary().route.stages()[0];
    snap.node_name(id).unwrap().to_string()
}

#[test]
fn external_load_steers_the_score() {
    let r = router();
    r.set_external_load("a", 15, 0).unwrap();
    // Not before the tick.
    r.tick();
    let mut reader = r.reader();
    let mut to_a = 0;
    for i in 0..200 {
        let (opts, lease) = reader.route(&Task::new(i, 10, 10)).unwrap();
        if head(&r, &opts) == "a" {
            to_a += 1;
        }
        drop(lease);
    }
    // P2C over two nodes: the one 75 % busy elsewhere loses every pair it is in.
    assert_eq!(to_a, 0, "the externally loaded node took {to_a} of 200");
    r.set_external_load("a", 0, 0).unwrap();
    r.tick();
    let mut to_a = 0;
    for i in 0..200 {
        let (opts, lease) = reader.route(&Task::new(i, 10, 10)).unwrap();
        if head(&r, &opts) == "a" {
            to_a += 1;
        }
        drop(lease);
    }
    assert!((50..150).contains(&to_a), "cleared: {to_a} of 200 to a");
    assert!(r.ledgers_are_zero());
}

#[test]
fn external_load_is_taken_out_of_admission() {
    let r = Router::builder()
        .node(NodeSpec::new("n").max_concurrency(20))
        .build()
        .unwrap();
    r.set_external_load("n", 18, 0).unwrap();
    r.tick();
    let mut reader = r.reader();
    let mut held = Vec::new();
    loop {
        match reader.route(&Task::new(held.len() as u64, 10, 10).priority(Priority::Critical)) {
            Ok((_, lease)) => held.push(lease),
            Err(e) => {
                assert_eq!(e, RouteError::Saturated);
                break;
            }
        }
    }
    assert_eq!(held.len(), 2, "20 slots, 18 held elsewhere");
    // Full elsewhere: nothing here, even critical.
    r.set_external_load("n", 25, 0).unwrap();
    r.tick();
    drop(held);
    assert_eq!(
        reader
            .route(&Task::new(1, 10, 10).priority(Priority::Critical))
            .unwrap_err(),
        RouteError::Saturated
    );
    r.set_external_load("n", 0, 0).unwrap();
    r.tick();
    assert!(reader.route(&Task::new(2, 10, 10)).is_ok());
    assert!(matches!(
        r.set_external_load("nope", 1, 1),
        Err(ConfigError::UnknownNode(_))
    ));
}
