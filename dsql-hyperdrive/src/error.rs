//! Errors from the Hyperdrive API client: Cloudflare's error codes and the HTTP status are kept,
//! and the message says what to do.

use std::fmt;
use std::time::Duration;

/// What went wrong, coarse enough to match on. New kinds may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Hyperdrive's test connection was refused for bad credentials (code 2013): the DSQL token
    /// or the IAM policy behind it is wrong.
    InvalidCredentials,
    /// Hyperdrive could not reach the origin (codes 2010, 2011). Often transient.
    OriginUnreachable,
    /// Hyperdrive's test connection failed for another reason (codes 2008, 2009, 2012, 2014,
    /// 2015, 2016): bad host, no TLS, missing database, failed test query.
    OriginRejected,
    /// Too many requests (HTTP 429); see [`Error::retry_after`].
    RateLimited,
    /// The Cloudflare API token was refused or lacks the "Hyperdrive Write" permission.
    Unauthorized,
    /// The account or configuration does not exist.
    NotFound,
    /// More than one configuration has the name asked for.
    DuplicateName,
    /// The account holds as many configurations as its plan allows.
    LimitReached,
    /// Cloudflare answered with a server error (HTTP 5xx).
    Server,
    /// Cloudflare refused the request for another reason (see [`Error::api_errors`]).
    Rejected,
    /// The request did not reach Cloudflare or the answer did not arrive (network, DNS, TLS).
    Transport,
    /// Cloudflare's answer could not be understood.
    InvalidResponse,
    /// An argument given to the client is invalid (API base URL, account id, configuration id).
    InvalidArgument,
}

/// One entry of an envelope's `errors` array.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApiMessage {
    /// Cloudflare's numeric code (0 when the body gave none).
    #[serde(default)]
    pub code: i64,
    /// Cloudflare's message (empty when the body gave none).
    #[serde(default)]
    pub message: String,
}

impl fmt::Display for ApiMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.message.is_empty()) {
            (0, _) => f.write_str(&self.message),
            (c, true) => write!(f, "code {c}"),
            (c, false) => write!(f, "code {c}: {}", self.message),
        }
    }
}

/// An error from the Hyperdrive API client. Never contains the API token or a password.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    status: Option<u16>,
    api_errors: Vec<ApiMessage>,
    retry_after: Option<Duration>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// Codes that Hyperdrive returns when its test connection to the origin fails.
const ORIGIN_CODES: std::ops::RangeInclusive<i64> = 2008..=2016;

impl Error {
    /// An error of `kind` with a message that says what to do.
    pub(crate) fn new(kind: ErrorKind, message: impl fmt::Display) -> Self {
        Self {
            kind,
            message: message.to_string(),
            status: None,
            api_errors: Vec::new(),
            retry_after: None,
            source: None,
        }
    }

    /// Attaches the underlying cause (which must not carry secrets).
    pub(crate) fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Builds the error for a refused API call from its status and the envelope's `errors`.
    /// `what` names the operation ("PATCH configuration 1234").
    pub(crate) fn from_api(
        what: &str,
        status: u16,
        api_errors: Vec<ApiMessage>,
        retry_after: Option<Duration>,
    ) -> Self {
        let has = |code: i64| api_errors.iter().any(|e| e.code == code);
        // Cloudflare's code decides, not the HTTP status (the same status carries many codes).
        let kind = if has(2013) {
            ErrorKind::InvalidCredentials
        } else if has(2010) || has(2011) {
            ErrorKind::OriginUnreachable
        } else if api_errors.iter().any(|e| ORIGIN_CODES.contains(&e.code)) {
            ErrorKind::OriginRejected
        } else if status == 429 {
            ErrorKind::RateLimited
        } else if status == 401 || status == 403 || has(10000) || has(9109) {
            ErrorKind::Unauthorized
        } else if status == 404 {
            ErrorKind::NotFound
        } else if has(2017) {
            ErrorKind::LimitReached
        } else if status >= 500 {
            ErrorKind::Server
        } else {
            ErrorKind::Rejected
        };
        let details = if api_errors.is_empty() {
            format!("HTTP {status}")
        } else {
            let list: Vec<String> = api_errors.iter().map(ToString::to_string).collect();
            format!("HTTP {status}, {}", list.join("; "))
        };
        let advice = match kind {
            ErrorKind::InvalidCredentials => {
                "Hyperdrive could not log in to the origin with the new password: the token or the IAM \
                 policy is wrong. Check that the signing credentials may use dsql:DbConnectAdmin (user \
                 admin) or dsql:DbConnect (other users) on this cluster, and that host, region and user \
                 are right"
                    .to_owned()
            }
            ErrorKind::OriginUnreachable => {
                "Hyperdrive could not reach the origin; check the host and port (retried: it may be transient)"
                    .to_owned()
            }
            ErrorKind::OriginRejected => {
                "Hyperdrive's test connection to the origin failed; check host, port, database and TLS"
                    .to_owned()
            }
            ErrorKind::RateLimited => match retry_after {
                Some(d) => format!("rate limited by Cloudflare; retry after {} s", d.as_secs()),
                None => "rate limited by Cloudflare; retry later".to_owned(),
            },
            ErrorKind::Unauthorized => {
                "the Cloudflare API token was refused: it must be valid and have the \"Hyperdrive Write\" \
                 permission on this account"
                    .to_owned()
            }
            ErrorKind::NotFound => "not found: check the account id and the configuration id".to_owned(),
            ErrorKind::LimitReached => {
                "the account holds as many Hyperdrive configurations as its plan allows; delete one or \
                 upgrade"
                    .to_owned()
            }
            ErrorKind::Server => "Cloudflare had a server error; try again later".to_owned(),
            _ => "Cloudflare refused the request".to_owned(),
        };
        Self {
            kind,
            message: format!("{what} failed ({details}): {advice}"),
            status: Some(status),
            api_errors,
            retry_after,
            source: None,
        }
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The HTTP status of the refusing answer, when there was one.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// Cloudflare's `errors` array (code and message), possibly empty.
    pub fn api_errors(&self) -> &[ApiMessage] {
        &self.api_errors
    }

    /// Cloudflare's error codes, in order.
    pub fn codes(&self) -> Vec<i64> {
        self.api_errors.iter().map(|e| e.code).collect()
    }

    /// The `retry-after` a 429 answer asked for.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Whether the request may succeed if sent again: 429, 5xx, and codes 2010, 2011 and 2015.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::RateLimited | ErrorKind::Server | ErrorKind::OriginUnreachable
        ) || self.api_errors.iter().any(|e| e.code == 2015)
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(code: i64) -> Vec<ApiMessage> {
        vec![ApiMessage {
            code,
            message: "x".into(),
        }]
    }

    #[test]
    fn code_decides_over_status() {
        let e = Error::from_api("PATCH", 400, msg(2013), None);
        assert_eq!(e.kind(), ErrorKind::InvalidCredentials);
        assert!(
            e.to_string()
                .contains("the token or the IAM policy is wrong"),
            "{e}"
        );
        assert!(!e.is_retryable());
        assert!(Error::from_api("PATCH", 400, msg(2010), None).is_retryable());
        assert!(Error::from_api("PATCH", 400, msg(2011), None).is_retryable());
        assert!(Error::from_api("PATCH", 400, msg(2015), None).is_retryable());
        assert!(!Error::from_api("PATCH", 400, msg(2014), None).is_retryable());
        assert!(Error::from_api("GET", 429, vec![], Some(Duration::from_secs(3))).is_retryable());
        assert!(Error::from_api("GET", 503, vec![], None).is_retryable());
        assert_eq!(
            Error::from_api("GET", 403, msg(10000), None).kind(),
            ErrorKind::Unauthorized
        );
        assert!(!Error::from_api("GET", 400, msg(1001), None).is_retryable());
        assert_eq!(
            Error::from_api("GET", 400, msg(2014), None).codes(),
            vec![2014]
        );
    }
}
