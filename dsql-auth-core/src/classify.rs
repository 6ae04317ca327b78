//! What a DSQL server error means for the caller: an OCC conflict to retry the transaction on,
//! a connect refusal to retry the connection on, an authentication failure, or anything else.
//!
//! Every adapter passes the SQLSTATE and message its driver reports to [`classify`], so the DSQL
//! codes live in one place.

use std::fmt;

/// The class of a DSQL error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DsqlErrorClass {
    /// SQLSTATE 40001: optimistic concurrency control rejected the commit. Retry the whole
    /// transaction.
    OccConflict(OccKind),
    /// SQLSTATE 53400: the cluster's new-connection rate was exceeded. Retry the connection
    /// after a backoff.
    RateExceeded,
    /// SQLSTATE 53300: the cluster has too many open connections. Retry the connection after a
    /// backoff.
    TooManyConnections,
    /// SQLSTATE 28000/28P01 or "access denied": the token was refused. Retrying with the same
    /// credentials will not help.
    AccessDenied,
    /// Anything else.
    Other,
}

/// Which kind of OCC conflict DSQL reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OccKind {
    /// `(OC000)`: another transaction changed the same data.
    Data,
    /// `(OC001)`: another transaction changed the schema.
    Schema,
    /// 40001 without a DSQL OC code (e.g. a plain PostgreSQL serialization failure).
    Unspecified,
}

/// SQLSTATE `serialization_failure`, which DSQL uses for OCC conflicts.
pub const SQLSTATE_SERIALIZATION_FAILURE: &str = "40001";
/// SQLSTATE DSQL uses when the new-connection rate is exceeded (`configuration_limit_exceeded`).
pub const SQLSTATE_RATE_EXCEEDED: &str = "53400";
/// SQLSTATE `too_many_connections`.
pub const SQLSTATE_TOO_MANY_CONNECTIONS: &str = "53300";

/// Classifies a server error by its SQLSTATE and message.
///
/// ```
/// use dsql_auth_core::{classify, DsqlErrorClass, classify::OccKind};
/// let class = classify("40001", "change conflicts with another transaction, please retry: (OC000)");
/// assert_eq!(class, DsqlErrorClass::OccConflict(OccKind::Data));
/// assert!(class.is_occ_conflict());
/// assert!(classify("53400", "Unable to accept connection, rate exceeded.").is_retryable_connect());
/// ```
pub fn classify(sqlstate: &str, message: &str) -> DsqlErrorClass {
    match sqlstate {
        SQLSTATE_SERIALIZATION_FAILURE => {
            DsqlErrorClass::OccConflict(OccKind::from_message(message))
        }
        SQLSTATE_RATE_EXCEEDED => DsqlErrorClass::RateExceeded,
        SQLSTATE_TOO_MANY_CONNECTIONS => DsqlErrorClass::TooManyConnections,
        "28000" | "28P01" => DsqlErrorClass::AccessDenied,
        _ if message.to_ascii_lowercase().contains("access denied") => DsqlErrorClass::AccessDenied,
        _ => DsqlErrorClass::Other,
    }
}

/// Classifies a server error from its message alone, for drivers that do not expose the SQLSTATE
/// (diesel reports 40001 as `SerializationFailure` with the message only; when the driver does
/// say "serialization failure", use [`OccKind::from_message`] instead).
///
/// Recognises DSQL's own words: the `(OC000)`/`(OC001)` codes and PostgreSQL's "could not
/// serialize access", "rate exceeded", "too many open connections", "access denied".
///
/// ```
/// use dsql_auth_core::{classify::{classify_message, OccKind}, DsqlErrorClass};
/// assert_eq!(
///     classify_message("change conflicts with another transaction, please retry: (OC000)"),
///     DsqlErrorClass::OccConflict(OccKind::Data)
/// );
/// assert_eq!(classify_message("relation \"t\" does not exist"), DsqlErrorClass::Other);
/// ```
pub fn classify_message(message: &str) -> DsqlErrorClass {
    let lower = message.to_ascii_lowercase();
    if message.contains("(OC000)") || message.contains("(OC001)") {
        DsqlErrorClass::OccConflict(OccKind::from_message(message))
    } else if lower.contains("could not serialize access") {
        DsqlErrorClass::OccConflict(OccKind::Unspecified)
    } else if lower.contains("unable to accept connection, rate exceeded") {
        DsqlErrorClass::RateExceeded
    } else if lower.contains("unable to accept connection, too many open connections") {
        DsqlErrorClass::TooManyConnections
    } else if lower.contains("access denied") {
        DsqlErrorClass::AccessDenied
    } else {
        DsqlErrorClass::Other
    }
}

impl OccKind {
    /// The kind of a serialization failure (SQLSTATE 40001) from its message: `(OC000)` data,
    /// `(OC001)` schema, otherwise unspecified.
    pub fn from_message(message: &str) -> OccKind {
        if message.contains("(OC000)") {
            OccKind::Data
        } else if message.contains("(OC001)") {
            OccKind::Schema
        } else {
            OccKind::Unspecified
        }
    }
}

impl DsqlErrorClass {
    /// True for OCC conflicts (any [`OccKind`]): retry the whole transaction.
    pub fn is_occ_conflict(&self) -> bool {
        matches!(self, DsqlErrorClass::OccConflict(_))
    }

    /// True for connect-time refusals that deserve a retry after a backoff: rate exceeded
    /// (53400) and too many connections (53300).
    pub fn is_retryable_connect(&self) -> bool {
        matches!(
            self,
            DsqlErrorClass::RateExceeded | DsqlErrorClass::TooManyConnections
        )
    }
}

impl fmt::Display for DsqlErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DsqlErrorClass::OccConflict(OccKind::Data) => "OCC conflict on data (OC000)",
            DsqlErrorClass::OccConflict(OccKind::Schema) => "OCC conflict on schema (OC001)",
            DsqlErrorClass::OccConflict(OccKind::Unspecified) => "serialization failure (40001)",
            DsqlErrorClass::RateExceeded => "connection rate exceeded (53400)",
            DsqlErrorClass::TooManyConnections => "too many connections (53300)",
            DsqlErrorClass::AccessDenied => "access denied",
            DsqlErrorClass::Other => "other error",
        })
    }
}
