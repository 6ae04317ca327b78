//! When to rotate: a pure function of (state, now, random) so it can be property-tested.
//!
//! A token written at `last_rotation` stays usable until its *effective expiry*, the earlier of
//! the token's own expiry and the expiry of the credentials that signed it. Rotation is due once
//! a third of that life (or less) remains; a jitter of up to `jitter` of the life moves the point
//! earlier, so many rotators started together do not all write at the same moment.

use std::time::{Duration, SystemTime};

/// What is known about the password currently stored in a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RotationState {
    /// When the stored token was signed and written.
    pub last_rotation: SystemTime,
    /// When the stored token expires (signing time + `X-Amz-Expires`).
    pub token_expires_at: SystemTime,
    /// When the credentials that signed it expire (`None` for long-term keys).
    pub credentials_expire_at: Option<SystemTime>,
}

impl RotationState {
    /// The earlier of the token's and the credentials' expiry: the moment the stored password
    /// stops working.
    pub fn effective_expiry(&self) -> SystemTime {
        match self.credentials_expire_at {
            Some(creds) if creds < self.token_expires_at => creds,
            _ => self.token_expires_at,
        }
    }

    /// The stored token's usable life: effective expiry minus rotation time (zero if reversed).
    pub fn lifetime(&self) -> Duration {
        self.effective_expiry()
            .duration_since(self.last_rotation)
            .unwrap_or(Duration::ZERO)
    }
}

/// Why a rotation is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RotateReason {
    /// Nothing is known about the stored password.
    NoState,
    /// The stored password has expired (or its life is zero).
    Expired,
    /// A third of the life (minus jitter) or less remains.
    Due,
}

/// The policy's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Write a new password now.
    Rotate(RotateReason),
    /// Nothing to do before `rotate_at`.
    Wait {
        /// When the rotation becomes due (with this jitter draw).
        rotate_at: SystemTime,
        /// When the stored password stops working.
        effective_expiry: SystemTime,
    },
}

impl Decision {
    /// Whether the decision is to rotate now.
    pub fn should_rotate(&self) -> bool {
        matches!(self, Decision::Rotate(_))
    }
}

/// The rotation rule: rotate when `remaining <= life * (refresh_fraction + jitter * random)`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RotationPolicy {
    /// Fraction of the life left at which rotation is due (default 1/3).
    pub refresh_fraction: f64,
    /// Largest extra fraction, scaled by the random draw, that makes rotation earlier (default 0.05).
    pub jitter: f64,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            refresh_fraction: 1.0 / 3.0,
            jitter: 0.05,
        }
    }
}

impl RotationPolicy {
    /// Decides whether to rotate at `now`. `random` is a uniform draw in `[0, 1)` supplied by the
    /// caller (values outside are clamped), which keeps this function pure.
    pub fn decide(&self, state: Option<&RotationState>, now: SystemTime, random: f64) -> Decision {
        let Some(state) = state else {
            return Decision::Rotate(RotateReason::NoState);
        };
        let expiry = state.effective_expiry();
        let life = state.lifetime();
        if life.is_zero() || now >= expiry {
            return Decision::Rotate(RotateReason::Expired);
        }
        let random = if random.is_finite() {
            random.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let fraction =
            (self.refresh_fraction.clamp(0.0, 1.0) + self.jitter.max(0.0) * random).min(1.0);
        let lead = life.mul_f64(fraction);
        let rotate_at = expiry.checked_sub(lead).unwrap_or(state.last_rotation);
        if now >= rotate_at {
            Decision::Rotate(RotateReason::Due)
        } else {
            Decision::Wait {
                rotate_at,
                effective_expiry: expiry,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn state(life: Duration, creds: Option<Duration>) -> RotationState {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        RotationState {
            last_rotation: t0,
            token_expires_at: t0 + life,
            credentials_expire_at: creds.map(|c| t0 + c),
        }
    }

    #[test]
    fn no_state_rotates() {
        let d = RotationPolicy::default().decide(None, SystemTime::UNIX_EPOCH, 0.5);
        assert_eq!(d, Decision::Rotate(RotateReason::NoState));
    }

    #[test]
    fn seven_day_token_waits_four_days_then_rotates() {
        let s = state(7 * DAY, None);
        let p = RotationPolicy {
            jitter: 0.0,
            ..RotationPolicy::default()
        };
        assert!(
            !p.decide(Some(&s), s.last_rotation + 4 * DAY, 0.0)
                .should_rotate()
        );
        assert!(
            p.decide(Some(&s), s.last_rotation + 5 * DAY, 0.0)
                .should_rotate()
        );
    }

    #[test]
    fn short_credentials_cap_the_life() {
        let s = state(7 * DAY, Some(Duration::from_secs(3600)));
        assert_eq!(s.lifetime(), Duration::from_secs(3600));
        let p = RotationPolicy::default();
        assert!(
            p.decide(Some(&s), s.last_rotation + Duration::from_secs(2500), 0.0)
                .should_rotate()
        );
        assert_eq!(
            p.decide(Some(&s), s.last_rotation + 2 * DAY, 0.0),
            Decision::Rotate(RotateReason::Expired)
        );
    }
}
