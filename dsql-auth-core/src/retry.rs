//! A retry policy as data: exponential backoff with full jitter, an attempt budget and a time
//! budget. Adapters supply the randomness and the sleep, so this stays runtime-agnostic.
//!
//! The delay before retry `n` (0 for the first retry) is
//!
//! ```text
//! delay(n) = min(max_backoff, random * initial_backoff * multiplier^n),   random in [0, 1)
//! ```
//!
//! The jitter is applied *before* the cap, so no delay ever exceeds `max_backoff` (adding jitter
//! after the cap, as the official Rust connector does, lets delays overshoot it).

use std::time::Duration;

/// How often and how long to retry. `max_attempts` counts every attempt, the first included.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included; 0 or 1 means no retry.
    pub max_attempts: u32,
    /// The backoff scale for the first retry (before jitter).
    pub initial_backoff: Duration,
    /// No delay exceeds this.
    pub max_backoff: Duration,
    /// Growth per retry. Values that are not finite or below 1 are treated as 1 (constant scale).
    pub multiplier: f64,
    /// The time budget from the first attempt: no retry is scheduled whose sleep would end after
    /// it. `None`: attempts only.
    pub max_elapsed: Option<Duration>,
}

impl RetryPolicy {
    /// For OCC conflicts (whole-transaction retries): 5 attempts, backoff 5 ms growing ×2 up to
    /// 500 ms, at most 10 s in all.
    pub fn occ() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(500),
            multiplier: 2.0,
            max_elapsed: Some(Duration::from_secs(10)),
        }
    }

    /// For connect refusals (53400 rate exceeded, 53300 too many connections): backoff 50 ms
    /// growing ×2 up to 2 s, at most 30 s in all. The time budget is the real limit (30 attempts
    /// take about 25 s on average): a burst of connections against DSQL's rate limit queues for
    /// seconds, and giving up after a few attempts would turn a slow start into failures.
    pub fn connect() -> Self {
        Self {
            max_attempts: 30,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            multiplier: 2.0,
            max_elapsed: Some(Duration::from_secs(30)),
        }
    }

    /// A policy that never retries.
    pub fn no_retry() -> Self {
        Self {
            max_attempts: 1,
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            multiplier: 1.0,
            max_elapsed: None,
        }
    }

    /// The delay before retry `retry` (0 for the first retry) given `random` in `[0, 1)`:
    /// `min(max_backoff, random * initial_backoff * multiplier^retry)`. Out-of-range `random`
    /// is clamped into `[0, 1]`; NaN counts as 0. Never panics, saturates at `max_backoff`.
    pub fn delay(&self, retry: u32, random: f64) -> Duration {
        let random = if random.is_nan() {
            0.0
        } else {
            random.clamp(0.0, 1.0)
        };
        let multiplier = if self.multiplier.is_finite() && self.multiplier >= 1.0 {
            self.multiplier
        } else {
            1.0
        };
        let cap = self.max_backoff.as_secs_f64();
        let exponent = i32::try_from(retry).unwrap_or(i32::MAX);
        let scale = self.initial_backoff.as_secs_f64() * multiplier.powi(exponent);
        if random == 0.0 || scale == 0.0 {
            return Duration::ZERO;
        }
        let jittered = random * scale;
        // `jittered` may be +inf after overflow; anything at or past the cap is the cap.
        if !jittered.is_finite() || jittered >= cap {
            self.max_backoff
        } else {
            // Finite, non-negative and below a `Duration`'s range: cannot panic.
            Duration::from_secs_f64(jittered).min(self.max_backoff)
        }
    }

    /// After `attempts_made` failed attempts (1 after the first) with `elapsed` since the first
    /// began: the delay before the next attempt, or `None` when the attempt budget is spent, the
    /// time budget is spent, or sleeping the delay would overrun the time budget.
    pub fn next_delay(
        &self,
        attempts_made: u32,
        elapsed: Duration,
        random: f64,
    ) -> Option<Duration> {
        if attempts_made >= self.max_attempts {
            return None;
        }
        let delay = self.delay(attempts_made.saturating_sub(1), random);
        if let Some(budget) = self.max_elapsed
            && (elapsed >= budget || elapsed.saturating_add(delay) > budget)
        {
            return None;
        }
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula() {
        let p = RetryPolicy::occ();
        assert_eq!(p.delay(0, 0.5), Duration::from_micros(2500));
        assert_eq!(p.delay(3, 0.5), Duration::from_millis(20));
        assert_eq!(p.delay(30, 0.5), Duration::from_millis(500));
    }
}
