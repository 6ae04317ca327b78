//! Quickstart: connect to Aurora DSQL with tokio-postgres, create a table if it is missing,
//! insert a row (retrying on OCC conflicts) and read the table back.
//!
//! ```text
//! DATABASE_URL='postgres://admin@<cluster-id>.dsql.us-east-1.on.aws/postgres' \
//!     cargo run -p examples --bin tokio_postgres_quickstart
//! CLUSTER_ENDPOINT=<cluster-id>.dsql.us-east-1.on.aws cargo run -p examples --bin tokio_postgres_quickstart
//! ```
//!
//! Credentials come from the AWS default chain (environment, profile, SSO, instance role).

use std::process::ExitCode;

use dsql_tokio_postgres::{Config, RetryPolicy, connect_spawned, transaction_with_retry};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tokio_postgres_quickstart: error: {err}");
            let mut source = err.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

/// DATABASE_URL (a full DSQL connection string), else CLUSTER_ENDPOINT (a host or cluster id;
/// region from AWS_REGION when it is not in the host). Environment fallbacks (PGUSER, ...) apply.
fn config_from_env() -> Result<Config, Box<dyn std::error::Error>> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    if let Some(url) = var("DATABASE_URL") {
        return Ok(Config::from_env_and_str(&url)?);
    }
    if let Some(host) = var("CLUSTER_ENDPOINT") {
        let quoted = host.trim().replace('\\', "\\\\").replace('\'', "\\'");
        return Ok(Config::from_env_and_str(&format!("host='{quoted}'"))?);
    }
    Err("set DATABASE_URL to a DSQL connection string (postgres://admin@<cluster-id>.dsql.<region>.on.aws/postgres) \
         or CLUSTER_ENDPOINT to the cluster's host"
        .into())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let config = config_from_env()?;
    let endpoint = config.endpoint();
    println!(
        "connecting to {}:{} as {} (token signed for {} in {}, sslmode={})",
        endpoint.connect_host(),
        endpoint.port(),
        config.options().user,
        config.signing_params().host(),
        config.signing_params().region(),
        config.options().sslmode
    );
    let mut client = connect_spawned(&config).await?;
    let version: String = client.query_one("SELECT version()", &[]).await?.get(0);
    println!("connected: {version}");

    // DSQL runs one DDL statement per transaction, apart from DML: this batch is its own transaction.
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS quickstart_notes (
                 id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
                 body text NOT NULL,
                 created_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
    println!("table quickstart_notes is ready");

    let body = format!(
        "hello from dsql-tokio-postgres, process {}",
        std::process::id()
    );
    let body = body.as_str();
    let id: String = transaction_with_retry(&mut client, &RetryPolicy::occ(), async |tx| {
        let row = tx
            .query_one(
                "INSERT INTO quickstart_notes (body) VALUES ($1) RETURNING id::text",
                &[&body],
            )
            .await?;
        Ok::<_, dsql_tokio_postgres::Error>(row.get(0))
    })
    .await?;
    println!("inserted note {id}");

    let count: i64 = client
        .query_one("SELECT count(*) FROM quickstart_notes", &[])
        .await?
        .get(0);
    println!("quickstart_notes holds {count} note(s); the latest:");
    let rows = client
        .query("SELECT id::text, body, created_at::text FROM quickstart_notes ORDER BY created_at DESC LIMIT 3", &[])
        .await?;
    for row in rows {
        let (id, body, at): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        println!("  {at}  {id}  {body}");
    }
    Ok(())
}
