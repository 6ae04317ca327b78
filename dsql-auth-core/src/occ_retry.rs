//! The loop behind every adapter's `transaction_with_retry`, written once: run the transaction,
//! and while it fails with an OCC conflict (OC000 data, OC001 schema) wait as the
//! [`RetryPolicy`] says and run it again; log each retry, a commit that needed retries, and the
//! conflict that outlasted the policy (with the core's [`diagnostics::occ_exhausted`] text).
//!
//! Adapters supply what differs per driver through [`OccAttempt`] (open, run the body, commit;
//! what the driver says an error is; how to hand the user the exhausted error) and the runtime
//! through `sleep` and `random`, so this stays runtime-agnostic.

use std::future::Future;
use std::time::Duration;

use crate::clock::Clock;
use crate::retry::{RetryPolicy, RetryState};
use crate::{DsqlErrorClass, diagnostics};

/// One transaction attempt, as an adapter runs it over its driver: begin, the user's body,
/// commit (rolling back on error). A struct holding the connection (`&mut`) and the body.
pub trait OccAttempt {
    /// What the body returns.
    type Output;
    /// The user's error type.
    type Error;

    /// Runs the body once in a new transaction and commits. The future is `Send` so the
    /// adapter's helper can run in `tokio::spawn`.
    fn run(&mut self) -> impl Future<Output = Result<Self::Output, Self::Error>> + Send;

    /// DSQL's class of an attempt's error, as far as the driver tells it (SQLSTATE and message,
    /// or the message alone). Only OCC conflicts are retried.
    fn class(&self, error: &Self::Error) -> Option<DsqlErrorClass>;

    /// The error returned when conflicts outlasted the policy, given the last conflict and the
    /// core's text saying so (already logged at warn). Default: the last conflict unchanged.
    fn exhausted(&self, error: Self::Error, text: String) -> Self::Error {
        let _ = text;
        error
    }
}

/// Runs `attempt` until it commits, fails with something other than an OCC conflict (returned
/// at once), or conflicts past `policy`'s attempt or time budget (measured on `clock`; returned
/// through [`OccAttempt::exhausted`]). Before each retry it awaits `sleep(delay)`, the delay
/// drawn with `random()` in `[0, 1)` as jitter. Each retry is logged at debug level with the
/// field `occ_retry`, a commit that needed retries at info level with `occ_retries`.
pub async fn run_occ<A, S>(
    policy: &RetryPolicy,
    clock: &dyn Clock,
    mut attempt: A,
    sleep: impl Fn(Duration) -> S,
    mut random: impl FnMut() -> f64,
) -> Result<A::Output, A::Error>
where
    A: OccAttempt,
    S: Future<Output = ()>,
{
    let mut state = RetryState::start(policy, clock);
    loop {
        let number = state.next_attempt();
        let error = match attempt.run().await {
            Ok(value) => {
                if number > 1 {
                    tracing::info!(
                        occ_retries = number - 1,
                        "transaction committed after OCC conflicts"
                    );
                }
                return Ok(value);
            }
            Err(error) => error,
        };
        let class = attempt.class(&error).filter(|c| c.is_occ_conflict());
        let reason = class.unwrap_or(DsqlErrorClass::Other);
        match state.failed(class.is_some(), random()) {
            Ok(delay) => {
                tracing::debug!(
                    occ_retry = number,
                    reason = %reason,
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "OCC conflict; retrying the transaction"
                );
                sleep(delay).await;
            }
            Err(stop) if stop.exhausted => {
                let text = diagnostics::occ_exhausted(&reason, stop.attempts, stop.elapsed);
                tracing::warn!(attempts = stop.attempts, reason = %reason, "{text}");
                return Err(attempt.exhausted(error, text));
            }
            Err(_) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OccKind;
    use crate::clock::ManualClock;
    use std::sync::Mutex;
    use std::task::{Context, Poll, Waker};
    use std::time::SystemTime;

    /// Fails with the listed errors in turn, then commits `runs`.
    struct Scripted {
        errors: Vec<&'static str>,
        runs: u32,
    }

    impl OccAttempt for Scripted {
        type Output = u32;
        type Error = String;

        fn run(&mut self) -> impl Future<Output = Result<u32, String>> + Send {
            self.runs += 1;
            let outcome = match self.errors.first() {
                Some(_) => Err(self.errors.remove(0).to_owned()),
                None => Ok(self.runs),
            };
            std::future::ready(outcome)
        }

        fn class(&self, error: &String) -> Option<DsqlErrorClass> {
            (error == "conflict").then_some(DsqlErrorClass::OccConflict(OccKind::Data))
        }

        fn exhausted(&self, error: String, text: String) -> String {
            format!("{text} / last: {error}")
        }
    }

    /// Runs the loop to its end: every future here is ready at once, sleeping only advances the
    /// manual clock and records the delay.
    fn run(
        errors: Vec<&'static str>,
        policy: &RetryPolicy,
    ) -> (Result<u32, String>, Vec<Duration>) {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH);
        let slept = Mutex::new(Vec::new());
        let sleep = |d: Duration| {
            slept.lock().unwrap().push(d);
            clock.advance(d);
            std::future::ready(())
        };
        let attempt = Scripted { errors, runs: 0 };
        let out = {
            let mut fut = std::pin::pin!(run_occ(policy, &clock, attempt, sleep, || 0.5));
            match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(out) => out,
                Poll::Pending => panic!("nothing here waits"),
            }
        };
        (out, slept.into_inner().unwrap())
    }

    #[test]
    fn conflicts_are_retried_with_the_policys_delays_until_the_commit() {
        let policy = RetryPolicy::occ();
        let (out, slept) = run(vec!["conflict", "conflict"], &policy);
        assert_eq!(out, Ok(3), "committed on the third run");
        assert_eq!(slept, vec![policy.delay(0, 0.5), policy.delay(1, 0.5)]);
    }

    #[test]
    fn other_errors_return_at_once_and_exhaustion_says_so() {
        let (out, slept) = run(vec!["conflict", "syntax error"], &RetryPolicy::occ());
        assert_eq!(out, Err("syntax error".to_owned()));
        assert_eq!(slept.len(), 1);

        let policy = RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::occ()
        };
        let (out, slept) = run(vec!["conflict"; 5], &policy);
        let err = out.unwrap_err();
        assert!(err.contains("after 2 attempts"), "{err}");
        assert!(err.ends_with("/ last: conflict"), "{err}");
        assert_eq!(slept.len(), 1);
    }
}
