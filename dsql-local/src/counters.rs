//! Counters of accepted and refused connections, by refusal reason.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why the gateway refused a connection. The client only ever sees DSQL's generic wording; the
/// reason is in the gateway's log and in [`Counters`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// The signature does not match the canonical request (tampered token or wrong secret key).
    BadSignature,
    /// The access key id is not the one the gateway accepts.
    UnknownAccessKey,
    /// The session token is missing, unexpected or different from the accepted credentials'.
    WrongSessionToken,
    /// The credential scope names another region.
    WrongRegion,
    /// The credential scope names another service than `dsql`.
    WrongService,
    /// `DbConnect` for `admin`, or `DbConnectAdmin` for another role.
    WrongAction,
    /// The signed host is not the host the client asked for (SNI), nor this cluster's host.
    HostMismatch,
    /// The token's validity (X-Amz-Date + X-Amz-Expires) has passed.
    Expired,
    /// X-Amz-Date is later than now, beyond the allowed clock skew.
    FutureDated,
    /// X-Amz-Expires is over 604800 seconds (7 days).
    ExpiryTooLong,
    /// The password is not a presigned token (missing or duplicated parameters, bad encoding).
    Malformed,
    /// The client sent a startup message without TLS.
    NoTls,
    /// The client connected with TLS but sent no SNI host name.
    NoSni,
    /// The new-connection rate limit was exceeded (53400).
    RateExceeded,
    /// The connection count limit was reached (53300).
    TooManyConnections,
    /// Refused on purpose by [`LocalDsql::refuse_next_authentications`](crate::LocalDsql::refuse_next_authentications).
    Injected,
    /// Closed at once: too many connections had not logged in yet
    /// ([`LocalDsqlBuilder::max_unauthenticated`](crate::LocalDsqlBuilder::max_unauthenticated)).
    TooManyUnauthenticated,
    /// Closed because it had not logged in within the handshake deadline
    /// ([`LocalDsqlBuilder::handshake_timeout`](crate::LocalDsqlBuilder::handshake_timeout)).
    HandshakeTimeout,
}

impl RefusalReason {
    /// Every reason, in declaration order.
    pub const ALL: [RefusalReason; 18] = [
        RefusalReason::BadSignature,
        RefusalReason::UnknownAccessKey,
        RefusalReason::WrongSessionToken,
        RefusalReason::WrongRegion,
        RefusalReason::WrongService,
        RefusalReason::WrongAction,
        RefusalReason::HostMismatch,
        RefusalReason::Expired,
        RefusalReason::FutureDated,
        RefusalReason::ExpiryTooLong,
        RefusalReason::Malformed,
        RefusalReason::NoTls,
        RefusalReason::NoSni,
        RefusalReason::RateExceeded,
        RefusalReason::TooManyConnections,
        RefusalReason::Injected,
        RefusalReason::TooManyUnauthenticated,
        RefusalReason::HandshakeTimeout,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// A short, stable, snake_case name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::BadSignature => "bad_signature",
            RefusalReason::UnknownAccessKey => "unknown_access_key",
            RefusalReason::WrongSessionToken => "wrong_session_token",
            RefusalReason::WrongRegion => "wrong_region",
            RefusalReason::WrongService => "wrong_service",
            RefusalReason::WrongAction => "wrong_action",
            RefusalReason::HostMismatch => "host_mismatch",
            RefusalReason::Expired => "expired",
            RefusalReason::FutureDated => "future_dated",
            RefusalReason::ExpiryTooLong => "expiry_too_long",
            RefusalReason::Malformed => "malformed",
            RefusalReason::NoTls => "no_tls",
            RefusalReason::NoSni => "no_sni",
            RefusalReason::RateExceeded => "rate_exceeded",
            RefusalReason::TooManyConnections => "too_many_connections",
            RefusalReason::Injected => "injected",
            RefusalReason::TooManyUnauthenticated => "too_many_unauthenticated",
            RefusalReason::HandshakeTimeout => "handshake_timeout",
        }
    }
}

impl std::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The live counters, shared by every connection task.
#[derive(Debug, Default)]
pub(crate) struct LiveCounters {
    accepted: AtomicU64,
    statements_refused: AtomicU64,
    refused: [AtomicU64; RefusalReason::ALL.len()],
}

impl LiveCounters {
    pub(crate) fn accept(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refuse(&self, reason: RefusalReason) {
        self.refused[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refuse_statements(&self, n: u64) {
        self.statements_refused.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Counters {
        Counters {
            accepted: self.accepted.load(Ordering::Relaxed),
            statements_refused: self.statements_refused.load(Ordering::Relaxed),
            refused: std::array::from_fn(|i| self.refused[i].load(Ordering::Relaxed)),
        }
    }
}

/// A snapshot of the gateway's counters, taken by [`LocalDsql::counters`](crate::LocalDsql::counters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    accepted: u64,
    statements_refused: u64,
    refused: [u64; RefusalReason::ALL.len()],
}

impl Counters {
    /// Connections whose token was accepted and that reached the upstream PostgreSQL.
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// Statements (and transaction shapes) refused by DSQL's SQL rules, in all sessions.
    pub fn statements_refused(&self) -> u64 {
        self.statements_refused
    }

    /// Connections refused for `reason`.
    pub fn refused(&self, reason: RefusalReason) -> u64 {
        self.refused[reason.index()]
    }

    /// Connections refused for any reason.
    pub fn refused_total(&self) -> u64 {
        self.refused.iter().sum()
    }

    /// The reasons with a non-zero count, for assertion messages.
    pub fn refusals(&self) -> Vec<(RefusalReason, u64)> {
        RefusalReason::ALL
            .iter()
            .map(|r| (*r, self.refused(*r)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_slot() {
        let live = LiveCounters::default();
        for (i, r) in RefusalReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            for _ in 0..=i {
                live.refuse(*r);
            }
        }
        live.accept();
        let c = live.snapshot();
        for (i, r) in RefusalReason::ALL.iter().enumerate() {
            assert_eq!(c.refused(*r), i as u64 + 1, "{r}");
        }
        assert_eq!(c.accepted(), 1);
        assert_eq!(c.refused_total(), (1..=18).sum::<u64>());
    }
}
