//! diesel on Aurora DSQL: a diesel `table!` schema, a bb8 pool of diesel-async connections from
//! dsql-diesel, inserts and queries with diesel's DSL, and one stock update protected against
//! optimistic-concurrency conflicts.
//!
//! ```text
//! DATABASE_URL='postgres://admin@<cluster-id>.dsql.us-east-1.on.aws/postgres' \
//!     cargo run -p examples --bin diesel_pool
//! ```
//!
//! Credentials come from the AWS default chain (environment, profile, SSO, instance role).

use std::process::ExitCode;

use diesel::prelude::*;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use dsql_diesel::{Config, RetryPolicy, transaction_with_retry};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

diesel::table! {
    /// The demo's products.
    diesel_demo_products (id) {
        /// Primary key.
        id -> Int8,
        /// Product name.
        name -> Text,
        /// Units in stock.
        stock -> Int4,
    }
}
use diesel_demo_products as products;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("diesel_pool: error: {err}");
            let mut source = err.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn config_from_env() -> Result<Config, BoxError> {
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

async fn run() -> Result<(), BoxError> {
    let config = config_from_env()?;
    println!("diesel pool for {}", config.endpoint().connect_host());
    let pool = dsql_diesel::bb8::Pool::builder()
        .max_size(4)
        .build(config)
        .await?;
    let mut conn = pool.get().await?;

    // DDL in a statement of its own (DSQL: one DDL per transaction, never with DML).
    conn.batch_execute(
        "CREATE TABLE IF NOT EXISTS diesel_demo_products (id bigint PRIMARY KEY, name text NOT NULL, stock int NOT NULL)",
    )
    .await?;
    diesel::delete(products::table).execute(&mut conn).await?;
    let inserted = diesel::insert_into(products::table)
        .values(&[
            (
                products::id.eq(1),
                products::name.eq("kettle"),
                products::stock.eq(12),
            ),
            (
                products::id.eq(2),
                products::name.eq("teapot"),
                products::stock.eq(5),
            ),
            (
                products::id.eq(3),
                products::name.eq("mug"),
                products::stock.eq(40),
            ),
        ])
        .execute(&mut conn)
        .await?;
    println!("inserted {inserted} products");

    let low: Vec<(String, i32)> = products::table
        .filter(products::stock.lt(20))
        .order(products::name)
        .select((products::name, products::stock))
        .load(&mut conn)
        .await?;
    println!("low stock: {low:?}");

    // Sell two teapots: read and write in one transaction, rerun whole on an OCC conflict.
    let left = transaction_with_retry(&mut conn, &RetryPolicy::occ(), async |conn| {
        let stock: i32 = products::table
            .find(2)
            .select(products::stock)
            .first(conn)
            .await?;
        if stock < 2 {
            return Err(BoxError::from("not enough teapots in stock"));
        }
        diesel::update(products::table.find(2))
            .set(products::stock.eq(stock - 2))
            .execute(conn)
            .await?;
        Ok(stock - 2)
    })
    .await?;
    println!("sold 2 teapots; {left} left");

    let total: Option<i64> = products::table
        .select(diesel::dsl::sum(products::stock))
        .first(&mut conn)
        .await?;
    println!("items in stock: {}", total.unwrap_or(0));
    let state = pool.state();
    println!(
        "pool: {} connections ({} idle)",
        state.connections, state.idle_connections
    );
    Ok(())
}
