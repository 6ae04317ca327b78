//! Error classification (OCC codes, connect refusals, access denied) and the retry policy.

use std::time::Duration;

use dsql_auth_core::classify::OccKind;
use dsql_auth_core::{DsqlErrorClass, RetryPolicy, classify};

#[test]
fn occ_conflicts() {
    let data = classify(
        "40001",
        "change conflicts with another transaction, please retry: (OC000)",
    );
    assert_eq!(data, DsqlErrorClass::OccConflict(OccKind::Data));
    let schema = classify(
        "40001",
        "schema has been updated by another transaction, please retry: (OC001)",
    );
    assert_eq!(schema, DsqlErrorClass::OccConflict(OccKind::Schema));
    let plain = classify(
        "40001",
        "could not serialize access due to concurrent update",
    );
    assert_eq!(plain, DsqlErrorClass::OccConflict(OccKind::Unspecified));
    for c in [data, schema, plain] {
        assert!(c.is_occ_conflict());
        assert!(!c.is_retryable_connect());
    }
    // The OC code alone, under another SQLSTATE, is not an OCC conflict.
    assert_eq!(classify("XX000", "(OC000)"), DsqlErrorClass::Other);
}

#[test]
fn connect_refusals() {
    let rate = classify("53400", "Unable to accept connection, rate exceeded.");
    assert_eq!(rate, DsqlErrorClass::RateExceeded);
    let count = classify(
        "53300",
        "Unable to accept connection, too many open connections.",
    );
    assert_eq!(count, DsqlErrorClass::TooManyConnections);
    for c in [rate, count] {
        assert!(c.is_retryable_connect());
        assert!(!c.is_occ_conflict());
    }
}

#[test]
fn access_denied() {
    assert_eq!(
        classify("28000", "unable to accept connection, access denied"),
        DsqlErrorClass::AccessDenied
    );
    assert_eq!(
        classify("28P01", "password authentication failed"),
        DsqlErrorClass::AccessDenied
    );
    assert_eq!(
        classify("08006", "FATAL: unable to accept connection, Access Denied"),
        DsqlErrorClass::AccessDenied
    );
    assert_eq!(classify("", "access denied"), DsqlErrorClass::AccessDenied);
    assert!(!DsqlErrorClass::AccessDenied.is_retryable_connect());
}

#[test]
fn everything_else() {
    assert_eq!(
        classify("42P01", "relation \"x\" does not exist"),
        DsqlErrorClass::Other
    );
    assert_eq!(
        classify("54000", "transaction row limit exceeded"),
        DsqlErrorClass::Other
    );
    assert_eq!(classify("", ""), DsqlErrorClass::Other);
    assert_eq!(
        DsqlErrorClass::OccConflict(OccKind::Data).to_string(),
        "OCC conflict on data (OC000)"
    );
}

#[test]
fn default_policies() {
    let occ = RetryPolicy::occ();
    assert_eq!(occ.max_attempts, 5);
    assert_eq!(occ.initial_backoff, Duration::from_millis(5));
    assert_eq!(occ.max_backoff, Duration::from_millis(500));
    assert_eq!(occ.max_elapsed, Some(Duration::from_secs(10)));
    let connect = RetryPolicy::connect();
    assert_eq!(connect.max_attempts, 30);
    assert_eq!(connect.initial_backoff, Duration::from_millis(50));
    assert_eq!(connect.max_backoff, Duration::from_secs(2));
    assert_eq!(connect.max_elapsed, Some(Duration::from_secs(30)));
    assert_eq!(
        RetryPolicy::no_retry().next_delay(1, Duration::ZERO, 0.5),
        None
    );
}

#[test]
fn delay_formula_jitter_before_cap() {
    let p = RetryPolicy::connect(); // 50 ms x2, cap 2 s
    // min(cap, random * 50 ms * 2^n)
    assert_eq!(p.delay(0, 0.0), Duration::ZERO);
    assert_eq!(p.delay(0, 0.5), Duration::from_millis(25));
    assert_eq!(p.delay(1, 0.5), Duration::from_millis(50));
    assert_eq!(p.delay(4, 0.5), Duration::from_millis(400));
    assert_eq!(p.delay(5, 0.5), Duration::from_millis(800));
    // 0.5 * 50 ms * 2^6 = 1.6 s < cap: jitter still shows below the cap.
    assert_eq!(p.delay(6, 0.5), Duration::from_millis(1600));
    // 0.5 * 50 ms * 2^7 = 3.2 s: capped, never above the cap (jitter is not added afterwards).
    assert_eq!(p.delay(7, 0.5), Duration::from_secs(2));
    assert_eq!(p.delay(7, 0.999_999), Duration::from_secs(2));
    assert_eq!(p.delay(u32::MAX, 0.25), Duration::from_secs(2));
}

#[test]
fn delay_survives_odd_inputs() {
    let mut p = RetryPolicy::occ();
    for random in [f64::NAN, -1.0, 2.0, f64::INFINITY, f64::NEG_INFINITY] {
        assert!(p.delay(3, random) <= p.max_backoff, "{random}");
    }
    assert_eq!(p.delay(3, f64::NAN), Duration::ZERO);
    assert_eq!(p.delay(3, -1.0), Duration::ZERO);
    for m in [f64::NAN, f64::INFINITY, -2.0, 0.0, 0.5, f64::MAX] {
        p.multiplier = m;
        assert!(p.delay(1000, 0.9) <= p.max_backoff, "{m}");
    }
    // Non-finite or shrinking multipliers count as 1: a constant scale.
    p.multiplier = f64::NAN;
    assert_eq!(p.delay(10, 0.5), p.delay(0, 0.5));
    p.multiplier = 2.0;
    p.initial_backoff = Duration::MAX;
    p.max_backoff = Duration::MAX;
    assert!(p.delay(u32::MAX, 0.9) <= Duration::MAX);
}

#[test]
fn attempt_budget() {
    let p = RetryPolicy {
        max_elapsed: None,
        ..RetryPolicy::occ()
    };
    for made in 1..5 {
        assert!(p.next_delay(made, Duration::ZERO, 0.5).is_some(), "{made}");
    }
    assert_eq!(p.next_delay(5, Duration::ZERO, 0.5), None);
    assert_eq!(p.next_delay(u32::MAX, Duration::ZERO, 0.5), None);
    // Delays grow with the attempts made.
    assert_eq!(
        p.next_delay(1, Duration::ZERO, 0.5),
        Some(Duration::from_micros(2500))
    );
    assert_eq!(
        p.next_delay(2, Duration::ZERO, 0.5),
        Some(Duration::from_millis(5))
    );
    let zero = RetryPolicy {
        max_attempts: 0,
        ..p
    };
    assert_eq!(zero.next_delay(0, Duration::ZERO, 0.5), None);
}

#[test]
fn time_budget() {
    let p = RetryPolicy::connect(); // budget 30 s
    assert_eq!(
        p.next_delay(1, Duration::from_secs(30), 0.0),
        None,
        "budget spent"
    );
    assert_eq!(p.next_delay(1, Duration::from_secs(31), 0.0), None);
    // 0.5 * 50 ms * 2^6 = 1.6 s: fits at 28.4 s, overruns at 28.5 s.
    assert_eq!(
        p.next_delay(7, Duration::from_millis(28_400), 0.5),
        Some(Duration::from_millis(1600))
    );
    assert_eq!(
        p.next_delay(7, Duration::from_millis(28_401), 0.5),
        None,
        "sleeping would overrun"
    );
    assert_eq!(p.next_delay(1, Duration::MAX, 0.5), None);
}
