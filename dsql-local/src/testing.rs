//! The harness every adapter's integration tests share (feature `testing`): start dsql-local,
//! get core [`ConnectOptions`] that reach it and a [`TokenProvider`] for its credentials.
//!
//! ```no_run
//! # async fn demo() {
//! use dsql_local::{LocalDsql, testing};
//! let local = testing::start(LocalDsql::builder()).await;
//! let options = testing::connect_options(&local); // host to sign for, hostaddr, port, CA, admin
//! let provider = testing::token_provider(&local);
//! # let _ = (options, provider); }
//! ```
//!
//! Two ways to reach the gateway, as real DSQL users do:
//! - [`connect_options`]: dial `hostaddr` (127.0.0.1) while TLS verifies, SNI names and the token
//!   signs the cluster host `<id>.dsql.<region>.on.aws` (libpq's `hostaddr`; tokio-postgres).
//! - [`connect_options_by_name`]: dial a name the gateway's certificate carries (`localhost`;
//!   the certificate also carries `127.0.0.1`, `::1` and `*.dsql.<region>.on.aws`), sign for the
//!   cluster host from `cluster_id` + `region`, and send `-c amzn-cluster-id=<id>`: PrivateLink
//!   without DNS. For drivers without `hostaddr` (sqlx).

use std::future::Future;
use std::time::Duration;

use dsql_auth_core::{ConnectOptions, SslMode, TokenProvider};

use crate::{LocalDsql, LocalDsqlBuilder};

/// How long [`guarded`] lets a test's body run: a hang guard, never a timing assertion.
pub const GUARD: Duration = Duration::from_secs(180);

/// The name [`connect_options_by_name`] dials: the gateway's certificate carries it.
pub const LOCAL_NAME: &str = "localhost";

/// Starts dsql-local as `builder` says. Panics with the harness's message when it cannot start
/// (it names the install command when PostgreSQL's binaries are missing): a test that needs
/// PostgreSQL fails, never skips.
pub async fn start(builder: LocalDsqlBuilder) -> LocalDsql {
    match builder.start().await {
        Ok(local) => local,
        Err(e) => panic!("dsql-local could not start: {e}"),
    }
}

/// Runs `fut`, panicking if it takes longer than [`GUARD`] (a hang guard for tests).
pub async fn guarded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(GUARD, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} hung for {GUARD:?}"),
    }
}

/// Options that reach `local` by address: host = the cluster host (TLS name, SNI, signing),
/// `hostaddr` = the gateway's address, its port, `sslrootcert` = its CA, verify-full, user
/// `admin`, database `postgres`, its region.
pub fn connect_options(local: &LocalDsql) -> ConnectOptions {
    ConnectOptions::new(local.host())
        .hostaddr(local.address().ip())
        .port(local.port())
        .region(local.region())
        .sslrootcert(local.ca_path())
        .sslmode(SslMode::VerifyFull)
}

/// Options that reach `local` by a name its certificate carries ([`LOCAL_NAME`]), without
/// `hostaddr`: `cluster_id` and `region` make the token signed for the cluster host and add
/// `-c amzn-cluster-id=<id>` to the startup options. Verify-full against [`LOCAL_NAME`].
pub fn connect_options_by_name(local: &LocalDsql) -> ConnectOptions {
    ConnectOptions::new(LOCAL_NAME)
        .port(local.port())
        .region(local.region())
        .cluster_id(local.cluster_id())
        .sslrootcert(local.ca_path())
        .sslmode(SslMode::VerifyFull)
}

/// A token provider signing with the credentials `local` accepts.
pub fn token_provider(local: &LocalDsql) -> TokenProvider {
    TokenProvider::new(local.credentials())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn options_sign_for_the_cluster_host_both_ways() {
        let local = start(LocalDsql::builder()).await;
        let by_address = connect_options(&local);
        let by_name = connect_options_by_name(&local);
        assert_eq!(
            by_address.signing_params().unwrap(),
            by_name.signing_params().unwrap()
        );
        assert_eq!(by_address.signing_params().unwrap().host(), local.host());
        assert_eq!(by_address.startup_options().unwrap(), None);
        assert_eq!(
            by_name.startup_options().unwrap(),
            Some(format!("-c amzn-cluster-id={}", local.cluster_id()))
        );
        assert_eq!(by_name.endpoint().unwrap().connect_host(), LOCAL_NAME);
    }
}
