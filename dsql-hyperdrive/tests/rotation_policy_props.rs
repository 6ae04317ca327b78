//! Property tests of the rotation policy across token lifetimes, credential lifetimes, clocks and
//! jitter draws.

use std::time::{Duration, SystemTime};

use dsql_hyperdrive::{Decision, RotateReason, RotationPolicy, RotationState};
use proptest::prelude::*;

const T0: u64 = 1_700_000_000;

fn state(life_s: u64, creds_s: Option<u64>) -> RotationState {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(T0);
    RotationState {
        last_rotation: t0,
        token_expires_at: t0 + Duration::from_secs(life_s),
        credentials_expire_at: creds_s.map(|c| t0 + Duration::from_secs(c)),
    }
}

fn at(offset_s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + offset_s)
}

/// The default policy, and others around it: the properties read the policy's own fraction and
/// jitter, so they hold for any setting, not for one pair of numbers copied here.
fn policies() -> impl Strategy<Value = RotationPolicy> {
    prop_oneof![
        Just(RotationPolicy::default()),
        (0.05f64..0.8, 0.0f64..0.15).prop_map(|(refresh, jitter)| {
            let mut p = RotationPolicy::default();
            p.refresh_fraction = refresh;
            p.jitter = jitter;
            p
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Effective expiry is the earlier of token and credentials expiry.
    #[test]
    fn effective_expiry_is_the_minimum(life in 1u64..=604_800, creds in proptest::option::of(0u64..=1_209_600)) {
        let s = state(life, creds);
        let expected = creds.map_or(life, |c| c.min(life));
        prop_assert_eq!(s.effective_expiry(), at(expected));
    }

    /// At or after effective expiry, it always rotates.
    #[test]
    fn expired_always_rotates(life in 1u64..=604_800, creds in proptest::option::of(0u64..=1_209_600),
                              after in 0u64..10_000_000, r in 0.0f64..1.0) {
        let s = state(life, creds);
        let now = s.effective_expiry() + Duration::from_secs(after);
        prop_assert_eq!(RotationPolicy::default().decide(Some(&s), now, r), Decision::Rotate(RotateReason::Expired));
    }

    /// With the refresh fraction of the life (a third by default) or less remaining, it always
    /// rotates, whatever the jitter draw.
    #[test]
    fn refresh_fraction_or_less_left_rotates(life in 3u64..=604_800, creds in proptest::option::of(3u64..=1_209_600),
                                             frac in 0.0f64..=1.0, r in 0.0f64..1.0, p in policies()) {
        let s = state(life, creds);
        let l = s.lifetime().as_secs_f64();
        // remaining = frac * l * refresh  (rounded down to whole seconds, still within it)
        let remaining = (frac * l * p.refresh_fraction).floor();
        let now = s.effective_expiry() - Duration::from_secs_f64(remaining);
        prop_assert!(p.decide(Some(&s), now, r).should_rotate());
    }

    /// With more than (refresh fraction + jitter) of the life remaining, it never rotates, and
    /// says when it will.
    #[test]
    fn more_than_refresh_plus_jitter_left_waits(life in 30u64..=604_800, creds in proptest::option::of(30u64..=1_209_600),
                                                frac in 0.0f64..1.0, r in 0.0f64..1.0, p in policies()) {
        let s = state(life, creds);
        let l = s.lifetime().as_secs_f64();
        let lo = l * (p.refresh_fraction + p.jitter);
        // remaining strictly above lo (at least a second) and at most the whole life
        let remaining = (lo + 1.0 + frac * (l - lo - 1.0).max(0.0)).ceil().min(l);
        prop_assume!(remaining > lo);
        let now = s.effective_expiry() - Duration::from_secs_f64(remaining);
        match p.decide(Some(&s), now, r) {
            Decision::Wait { rotate_at, effective_expiry } => {
                prop_assert!(rotate_at > now);
                prop_assert_eq!(effective_expiry, s.effective_expiry());
                let lead = s.effective_expiry().duration_since(rotate_at).unwrap().as_secs_f64();
                let min_lead = l * p.refresh_fraction;
                prop_assert!(lead >= min_lead - 1e-6 && lead <= lo + 1e-6, "lead {} outside [{}, {}]", lead, min_lead, lo);
            }
            d => prop_assert!(false, "rotated with {} of {} s left: {:?}", remaining, l, d),
        }
    }

    /// Checking on any schedule at least as often as the refresh fraction of the life, the
    /// first rotation always comes before the effective expiry.
    #[test]
    fn periodic_checks_never_let_it_expire(life in 3u64..=604_800, creds in proptest::option::of(3u64..=1_209_600),
                                           interval_frac in 0.01f64..1.0, start in 0u64..3600, r in 0.0f64..1.0,
                                           p in policies()) {
        let s = state(life, creds);
        let l = s.lifetime().as_secs();
        let window = (l as f64 * p.refresh_fraction).floor();
        prop_assume!(window >= 1.0);
        let interval = (window * interval_frac).max(1.0) as u64;
        let mut t = start.min(l - 1);
        loop {
            let now = at(t);
            if p.decide(Some(&s), now, r).should_rotate() {
                prop_assert!(now < s.effective_expiry(), "first rotation at {} >= expiry {}", t, l);
                break;
            }
            t += interval;
            prop_assert!(t <= l + interval, "never rotated");
        }
    }

    /// Once due, it stays due as time goes on (same jitter draw).
    #[test]
    fn due_is_monotonic(life in 1u64..=604_800, creds in proptest::option::of(1u64..=1_209_600),
                        a in 0u64..1_300_000, b in 0u64..1_300_000, r in 0.0f64..1.0, p in policies()) {
        let (early, late) = (a.min(b), a.max(b));
        let s = state(life, creds);
        if p.decide(Some(&s), at(early), r).should_rotate() {
            prop_assert!(p.decide(Some(&s), at(late), r).should_rotate());
        }
    }

    /// Out-of-range jitter draws are clamped, never panicking or rotating outside the window.
    #[test]
    fn wild_random_values_are_safe(life in 1u64..=604_800, now in 0u64..1_300_000,
                                   r in prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(-1.0), Just(7.0), any::<f64>()],
                                   p in policies()) {
        let s = state(life, None);
        let d = p.decide(Some(&s), at(now), r);
        let remaining = life.saturating_sub(now) as f64;
        if remaining > life as f64 * (p.refresh_fraction + p.jitter) + 1.0 {
            prop_assert!(!d.should_rotate());
        }
    }
}

#[test]
fn no_state_rotates_at_any_time() {
    for t in [0, 1, T0, u32::MAX as u64] {
        assert_eq!(
            RotationPolicy::default().decide(None, at(t), 0.3),
            Decision::Rotate(RotateReason::NoState)
        );
    }
}
