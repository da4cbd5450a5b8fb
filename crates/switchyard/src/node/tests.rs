use super::live::*;
use super::spec::*;
use crate::capability::CapabilityRegistry;
use crate::error::ConfigError;
use crate::model::{NodeId, Outcome};

fn shared() -> crate::sync::Arc<crate::lease::slab::LeaseShared> {
    crate::sync::Arc::new(crate::lease::slab::LeaseShared::new(None))
}

fn reg() -> CapabilityRegistry {
    let mut r = CapabilityRegistry::new();
    r.intern("chat").unwrap();
    r
}

fn amt(inflight: u64, memory_mb: u64, tokens: u64, cpu_millis: u64) -> (u64, u64) {
    Amounts {
        inflight,
        memory_mb,
        tokens,
        cpu_millis,
        gpu_millis: 0,
    }
    .pack()
}

#[test]
fn packing_round_trips() {
    let a = Amounts {
        inflight: 65_535,
        memory_mb: M24,
        tokens: M24,
        cpu_millis: M32,
        gpu_millis: 7,
    };
    let (w0, w1) = a.pack();
    assert_eq!(Amounts::unpack(w0, w1), a);
    let cap = amt(2, 10, 10, 5);
    assert!(fits0(amt(1, 2, 3, 0).0, amt(1, 8, 7, 0).0, cap.0));
    assert!(!fits0(amt(1, 2, 3, 0).0, amt(0, 9, 0, 0).0, cap.0));
    assert!(!fits0(amt(1, 2, 3, 0).0, amt(0, 0, 8, 0).0, cap.0));
    assert!(!fits0(amt(2, 0, 0, 0).0, amt(1, 0, 0, 0).0, cap.0));
    assert!(!fits1(amt(0, 0, 0, 5).1, amt(0, 0, 0, 1).1, cap.1));
    let full = Amounts {
        inflight: 1,
        memory_mb: 5,
        tokens: 10,
        ..Default::default()
    };
    assert!((full.utilization(&Amounts::unpack(cap.0, cap.1)) - 1.0).abs() < 1e-12);
}

#[test]
fn reserve_is_all_or_nothing() {
    let live = NodeLive::new(NodeId(1), shared());
    let (cap0, cap1) = amt(2, 100, 1000, 1500);
    let (a0, a1) = amt(1, 60, 10, 1000);
    assert!(live.try_reserve(a0, a1, cap0, cap1));
    // memory would exceed: nothing is taken
    assert!(!live.try_reserve(a0, 0, cap0, cap1));
    assert_eq!(live.load(), (a0, a1));
    // cpu would exceed: w0 must be rolled back
    let (b0, b1) = amt(1, 40, 10, 1000);
    assert!(!live.try_reserve(b0, b1, cap0, cap1));
    assert_eq!(live.load(), (a0, a1));
    assert!(live.try_reserve(b0, 0, cap0, cap1));
    // concurrency full
    assert!(!live.try_reserve(amt(1, 0, 0, 0).0, 0, cap0, cap1));
    live.release(a0, a1);
    live.release(b0, 0);
    assert_eq!(live.load(), (0, 0));
}

#[test]
fn outcomes_and_ewma() {
    let live = NodeLive::new(NodeId(1), shared());
    live.record_outcome(true, Outcome::Success, 100.0, 50.0);
    live.record_outcome(true, Outcome::Success, 200.0, 100.0);
    live.record_outcome(true, Outcome::Timeout, f64::NAN, 1.0);
    live.record_outcome(false, Outcome::Success, 50.0, 0.0);
    assert_eq!(live.outcomes()[0], 2);
    assert_eq!(live.all_outcomes()[0], 3);
    assert_eq!(live.outcomes()[Outcome::Timeout.index()], 1);
    assert_eq!(live.leases(), 4);
    // 100 → 120 → 114 (the downstream sample moves latency, not slowness)
    assert!(
        (live.latency_ewma_ms() - 106.0).abs() < 1e-3,
        "{}",
        live.latency_ewma_ms()
    );
    assert!((live.slowness() - 2.0).abs() < 1e-6);
}

#[test]
fn validation_names_the_field() {
    let r = reg();
    assert!(NodeSpec::new("a")
        .capabilities(["chat"])
        .validate(&r)
        .is_ok());
    let e = NodeSpec::new("a")
        .weight(f64::NAN)
        .validate(&r)
        .unwrap_err();
    assert!(matches!(
        e,
        ConfigError::InvalidNumber {
            field: "weight",
            ..
        }
    ));
    let e = NodeSpec::new("a").weight(-1.0).validate(&r).unwrap_err();
    assert!(matches!(
        e,
        ConfigError::InvalidNumber {
            field: "weight",
            ..
        }
    ));
    let e = NodeSpec::new("a")
        .max_concurrency(0)
        .validate(&r)
        .unwrap_err();
    assert_eq!(
        e,
        ConfigError::ZeroCapacity {
            node: "a".into(),
            field: "max_concurrency"
        }
    );
    let e = NodeSpec::new("a")
        .max_concurrency(70_000)
        .validate(&r)
        .unwrap_err();
    assert!(matches!(e, ConfigError::CapacityTooLarge { .. }));
    let e = NodeSpec::new("a")
        .capabilities(["vision"])
        .validate(&r)
        .unwrap_err();
    assert_eq!(e, ConfigError::UnknownCapability("vision".into()));
    let e = NodeSpec::new("a")
        .compute(0.0, 1.0, 0.0, 0.0)
        .validate(&r)
        .unwrap_err();
    assert!(matches!(
        e,
        ConfigError::ZeroCapacity {
            field: "cpu_cores",
            ..
        }
    ));
    let e = NodeSpec::new("").validate(&r).unwrap_err();
    assert!(matches!(e, ConfigError::InvalidName { .. }));
    let e = NodeSpec::new("a")
        .speed(1.0, 5e-324, 1.0)
        .validate(&r)
        .unwrap_err();
    assert!(matches!(
        e,
        ConfigError::InvalidNumber {
            field: "prefill_tokens_per_sec",
            ..
        }
    ));
    let e = NodeSpec::new("a")
        .capability_score("chat", 1.5)
        .validate(&r)
        .unwrap_err();
    assert!(matches!(
        e,
        ConfigError::InvalidNumber {
            field: "capability_score",
            ..
        }
    ));
    let ok = NodeSpec::new("a")
        .capabilities(["chat"])
        .capability_score("chat", 0.5)
        .capability_score("chat", 0.7)
        .validate(&r)
        .unwrap();
    assert_eq!(&*ok.scores, &[(0u16, 0.7f32)]);
}

#[test]
fn service_time_formula() {
    let n = NodeSpec::new("a").speed(10.0, 1000.0, 100.0);
    assert!((n.service_time_ms(500, 20) - (10.0 + 500.0 + 200.0)).abs() < 1e-9);
}
