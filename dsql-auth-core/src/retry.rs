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
//!
//! [`Retry`] is the one loop every adapter runs (connect refusals, OCC conflicts, HTTP retries):
//! budgets are measured on the core's [`Clock`], and the caller supplies the sleep and the
//! randomness, so it needs no async runtime.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use dsql_auth_core::{RetryPolicy, SystemClock, retry::Retry};
//! let policy = RetryPolicy { initial_backoff: std::time::Duration::ZERO, ..RetryPolicy::occ() };
//! let result = Retry::new(&policy, &SystemClock, |_err: &&str, _delay| async {}, || 0.5)
//!     .run(|err: &&str| *err == "busy", |attempt: u32| async move { if attempt < 3 { Err("busy") } else { Ok(attempt) } })
//!     .await;
//! assert_eq!(result.map(|done| (done.value, done.attempts)), Ok((3, 3)));
//! # });
//! ```

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::clock::Clock;

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

/// The retry loop's bookkeeping without the loop, for callers whose attempts cannot be a
/// closure returning a future (an attempt that mutably borrows a connection, as an OCC helper's
/// does): count attempts, measure time on the clock, decide. [`Retry`] is the loop built on it.
///
/// ```
/// use dsql_auth_core::{RetryPolicy, SystemClock, retry::RetryState};
/// let policy = RetryPolicy::occ();
/// let mut state = RetryState::start(&policy, &SystemClock);
/// let attempt = state.next_attempt(); // 1
/// // ... the attempt failed with a retryable error:
/// let delay = state.failed(true, 0.5).expect("the budget allows a retry");
/// # let _ = (attempt, delay);
/// ```
#[derive(Debug)]
pub struct RetryState<'p> {
    policy: &'p RetryPolicy,
    clock: &'p dyn Clock,
    started: SystemTime,
    attempts: u32,
}

/// Why a retry loop stops after a failed attempt; with the error, it becomes a [`GaveUp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    /// Attempts made (at least 1).
    pub attempts: u32,
    /// Time from the start of the first attempt to the failure, on the clock.
    pub elapsed: Duration,
    /// True when the error was retryable but the budget was spent; false when it was not retryable.
    pub exhausted: bool,
}

impl Stop {
    /// This stop with the error that caused it.
    pub fn with_error<E>(self, error: E) -> GaveUp<E> {
        GaveUp {
            error,
            attempts: self.attempts,
            elapsed: self.elapsed,
            exhausted: self.exhausted,
        }
    }
}

impl<'p> RetryState<'p> {
    /// Starts the clock: call just before the first attempt.
    pub fn start(policy: &'p RetryPolicy, clock: &'p dyn Clock) -> Self {
        Self {
            policy,
            clock,
            started: clock.now(),
            attempts: 0,
        }
    }

    /// Counts an attempt about to start and returns its number (1 for the first).
    pub fn next_attempt(&mut self) -> u32 {
        self.attempts = self.attempts.saturating_add(1);
        self.attempts
    }

    /// Attempts counted so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Time since [`start`](Self::start), on the clock (zero if the clock went backwards).
    pub fn elapsed(&self) -> Duration {
        elapsed_since(self.clock, self.started)
    }

    /// The current attempt failed: `Ok(delay)` to sleep before the next attempt, or why to stop
    /// (not `retryable`, or the attempt or time budget is spent). `random` in `[0, 1)` is the jitter.
    pub fn failed(&self, retryable: bool, random: f64) -> Result<Duration, Stop> {
        let elapsed = self.elapsed();
        let stop = |exhausted| Stop {
            attempts: self.attempts,
            elapsed,
            exhausted,
        };
        if !retryable {
            return Err(stop(false));
        }
        self.policy
            .next_delay(self.attempts.max(1), elapsed, random)
            .ok_or_else(|| stop(true))
    }
}

/// The retry loop: runs an attempt, and while it fails with an error the caller calls retryable,
/// sleeps as the [`RetryPolicy`] says and runs it again. Build one per operation.
pub struct Retry<'p, S, R> {
    policy: &'p RetryPolicy,
    clock: &'p dyn Clock,
    before_retry: S,
    random: R,
}

impl<S, R> fmt::Debug for Retry<'_, S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("policy", self.policy)
            .finish_non_exhaustive()
    }
}

/// An attempt that succeeded, and how many attempts it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Succeeded<T> {
    /// What the successful attempt returned.
    pub value: T,
    /// Attempts made, the successful one included (1 when the first attempt succeeded).
    pub attempts: u32,
    /// Time from the start of the first attempt to the end of the last, on the runner's clock.
    pub elapsed: Duration,
}

/// Why the runner stopped without success: the last error, the attempts made and the time spent,
/// so a diagnostic can say "refused after N attempts in T".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GaveUp<E> {
    /// The last attempt's error.
    pub error: E,
    /// Attempts made (at least 1).
    pub attempts: u32,
    /// Time from the start of the first attempt to the end of the last, on the runner's clock.
    pub elapsed: Duration,
    /// True when the error was retryable but the policy's attempt or time budget was spent;
    /// false when the error was not retryable (returned after that attempt).
    pub exhausted: bool,
}

impl<'p, S, R> Retry<'p, S, R>
where
    R: FnMut() -> f64,
{
    /// A runner for `policy`, measuring time on `clock`. Before each retry it calls
    /// `before_retry(&error, delay)` and awaits the future it returns: that is where the caller
    /// sleeps (e.g. `tokio::time::sleep(delay)`) and may log. `random` returns numbers in `[0, 1)`
    /// for the jitter.
    pub fn new(policy: &'p RetryPolicy, clock: &'p dyn Clock, before_retry: S, random: R) -> Self {
        Self {
            policy,
            clock,
            before_retry,
            random,
        }
    }

    /// Runs `attempt` (given the attempt number, 1 for the first) until it succeeds, fails with
    /// an error that `retryable` refuses, or the policy's budgets are spent.
    ///
    /// `attempt` is a closure returning a future, not an `async` closure: the futures of
    /// `AsyncFnMut` closures cannot yet be proven `Send` when the whole is spawned (rustc's
    /// higher-ranked `Send` limitation), and every adapter's futures must be `Send`. When an
    /// attempt must borrow something mutably, write the loop with [`RetryState`].
    pub async fn run<T, E, A, AF, SF>(
        mut self,
        mut retryable: impl FnMut(&E) -> bool,
        mut attempt: A,
    ) -> Result<Succeeded<T>, GaveUp<E>>
    where
        A: FnMut(u32) -> AF,
        AF: Future<Output = Result<T, E>>,
        S: FnMut(&E, Duration) -> SF,
        SF: Future<Output = ()>,
    {
        let mut state = RetryState::start(self.policy, self.clock);
        loop {
            let n = state.next_attempt();
            let error = match attempt(n).await {
                Ok(value) => {
                    return Ok(Succeeded {
                        value,
                        attempts: n,
                        elapsed: state.elapsed(),
                    });
                }
                Err(error) => error,
            };
            let retry = retryable(&error);
            match state.failed(retry, (self.random)()) {
                Ok(delay) => (self.before_retry)(&error, delay).await,
                Err(stop) => return Err(stop.with_error(error)),
            }
        }
    }
}

/// The body of every adapter's `transaction_with_retry`: an async closure `async |tx| -> Result<T, E>`
/// over the driver's transaction (or connection) type `A`. Implemented for every such closure;
/// you never implement it. Adapters bound it as
/// `F: for<'r> OccBody<&'r mut Conn, T, E, Fut: Send> + Send`.
///
/// Why not plain `AsyncFnMut`: the future an `AsyncFnMut` returns cannot be required to be `Send`
/// on stable Rust, and without that the helper's future is not `Send` either (rustc reports
/// "implementation of `Send` is not general enough" as soon as it runs in `tokio::spawn`).
/// Naming the future through `FnMut`, as diesel-async's own `transaction` does through `FnOnce`,
/// makes it `Send`. The price: the closure's future may not borrow state the closure owns or
/// borrows mutably (`count += 1` on a captured local); use an atomic captured by reference, or
/// return the value instead. No `Box::pin` is needed in user code.
pub trait OccBody<A, T, E>:
    AsyncFnMut(A) -> Result<T, E> + FnMut(A) -> <Self as OccBody<A, T, E>>::Fut
{
    /// The future of one attempt.
    type Fut: Future<Output = Result<T, E>>;
}

impl<A, T, E, F, Fut> OccBody<A, T, E> for F
where
    F: AsyncFnMut(A) -> Result<T, E> + FnMut(A) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    type Fut = Fut;
}

/// Time since `start` on `clock`; zero if the clock went backwards.
fn elapsed_since(clock: &dyn Clock, start: SystemTime) -> Duration {
    clock.now().duration_since(start).unwrap_or(Duration::ZERO)
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
