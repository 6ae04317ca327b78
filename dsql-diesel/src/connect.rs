//! Opening a DSQL connection as diesel-async's [`AsyncPgConnection`].

use std::sync::Arc;

use diesel_async::AsyncPgConnection;
use dsql_tokio_postgres::Config;

use crate::error::Error;

/// Opens a connection: dsql-tokio-postgres' [`connect`](dsql_tokio_postgres::connect) (a token
/// valid right now, verify-full TLS, DSQL's connect refusals retried), turned into diesel-async's
/// own [`AsyncPgConnection`] with
/// [`try_from_client_and_connection`](AsyncPgConnection::try_from_client_and_connection).
///
/// Errors are of kind [`ErrorKind::Connect`](crate::ErrorKind::Connect) with dsql-tokio-postgres'
/// kind inside (access denied names the key id, signing host, region and action), or
/// [`ErrorKind::Setup`](crate::ErrorKind::Setup). Use `?` into [`diesel::ConnectionError`] where
/// diesel's type is expected.
pub async fn connect(config: &Config) -> Result<AsyncPgConnection, Error> {
    let (client, connection) = dsql_tokio_postgres::connect(config)
        .await
        .map_err(|e| Error::connect(Arc::new(e)))?;
    AsyncPgConnection::try_from_client_and_connection(client, connection)
        .await
        .map_err(Error::setup)
}
