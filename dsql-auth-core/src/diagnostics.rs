//! The user-facing text for DSQL's failures, written once so every adapter says the same thing.
//! Each names what was used (host, region, action, access key id, attempts) and what to do next;
//! none ever contains a token, a secret key or a session token (the inputs do not include them).

use std::fmt;
use std::time::Duration;

use crate::token::SigningParams;

/// What was used for a connection that DSQL refused with "access denied".
#[derive(Debug, Clone, Copy)]
pub struct AccessDenied<'a> {
    /// The host dialled.
    pub connect_host: &'a str,
    /// The database role.
    pub user: &'a str,
    /// The access key id the token was signed with, when known (never the secret).
    pub access_key_id: Option<&'a str>,
    /// What the token was signed for: host, region, action.
    pub signing: &'a SigningParams,
    /// The server's detail line (e.g. a session id, or "Signature expired"), if any.
    pub server_detail: Option<&'a str>,
}

impl fmt::Display for AccessDenied<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let action = self.signing.action();
        write!(
            f,
            "DSQL at {} denied access to user {:?}",
            self.connect_host, self.user
        )?;
        if let Some(detail) = self.server_detail {
            write!(f, " ({detail})")?;
        }
        write!(
            f,
            ": the token was signed with access key id {} for host {}, region {}, action {action}. Check that \
             these credentials are current, that their IAM policy allows dsql:{action} on this cluster, that host \
             and region name this cluster, and (for a role other than admin) that the role is linked to this IAM \
             identity",
            self.access_key_id.unwrap_or("<unknown>"),
            self.signing.host(),
            self.signing.region(),
        )
    }
}

/// The text for connect refusals (53400 rate exceeded, 53300 too many connections) that lasted
/// through the whole connect retry budget.
pub fn refused_after_budget(
    connect_host: &str,
    reason: &dyn fmt::Display,
    attempts: u32,
    elapsed: Duration,
) -> String {
    format!(
        "DSQL kept refusing new connections to {connect_host} ({reason}) after {} in {}: open fewer \
         connections at once (use a pool with a lower max size) or allow a larger connect retry budget",
        attempts_text(attempts),
        duration_text(elapsed)
    )
}

/// The text for a transaction that kept hitting OCC conflicts until its retry budget was spent.
pub fn occ_exhausted(reason: &dyn fmt::Display, attempts: u32, elapsed: Duration) -> String {
    format!(
        "the transaction still conflicted ({reason}) after {} in {}: reduce contention on the rows \
         involved, or allow more attempts in the retry policy",
        attempts_text(attempts),
        duration_text(elapsed)
    )
}

fn attempts_text(attempts: u32) -> String {
    if attempts == 1 {
        "1 attempt".to_owned()
    } else {
        format!("{attempts} attempts")
    }
}

fn duration_text(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Action;

    #[test]
    fn access_denied_names_what_was_used() {
        let params = SigningParams::new(
            "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws",
            "us-east-1",
            Action::DbConnect,
        )
        .unwrap();
        let text = AccessDenied {
            connect_host: "vpce.example",
            user: "app",
            access_key_id: Some("AKIDEXAMPLE"),
            signing: &params,
            server_detail: Some("Session Id: x"),
        }
        .to_string();
        for needle in [
            "vpce.example",
            "\"app\"",
            "AKIDEXAMPLE",
            "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws",
            "region us-east-1",
            "action DbConnect",
            "Session Id: x",
        ] {
            assert!(text.contains(needle), "{needle} missing: {text}");
        }
    }

    #[test]
    fn budgets_name_attempts_and_time() {
        let t = refused_after_budget("h", &"rate exceeded", 7, Duration::from_millis(1500));
        assert!(t.contains("after 7 attempts in 1500 ms"), "{t}");
        let t = occ_exhausted(&"OC000", 1, Duration::ZERO);
        assert!(t.contains("after 1 attempt in 0 ms"), "{t}");
    }
}
