//! Token signing and serving, beside aws-sdk-dsql's AuthTokenGenerator in the same run.
//!
//! - `token_fresh/dsql-rs`: a newly signed token per iteration through a `Signer` (the day's
//!   signing key cached, as on the provider's miss path), driven by the same current-thread tokio
//!   `block_on` as the anchor so both pay the same executor cost.
//! - `token_fresh/dsql-rs-sync`: the same signing called directly (no executor).
//! - `token_fresh/dsql-rs-cold-key`: `token::sign`, deriving the signing key every time.
//! - `token_fresh/anchor`: `AuthTokenGenerator::db_connect_admin_auth_token`, static credentials.
//! - `token_cached/dsql-rs`: `TokenProvider::token` on a cache hit (system clock), polled once
//!   (a hit is ready at once, so no executor is involved).
//! - `token_cached/dsql-rs-fixed-clock`: the same with a clock that returns a constant: the
//!   provider's own cost without the operating system's clock read (`SystemTime::now()` costs
//!   ~80 ns where `clock_gettime` is a real system call, as in some sandboxes and VMs).
//!
//! Run: `cargo bench -p dsql-auth-core --bench token`

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_dsql::auth_token::{AuthTokenGenerator, Config};
use aws_types::region::Region;
use criterion::{Criterion, criterion_group, criterion_main};
use dsql_auth_core::token::{Signer, sign};
use dsql_auth_core::{Action, SigningParams, TokenProvider};
use futures_util::FutureExt;

const HOST: &str = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws";
const REGION: &str = "us-east-1";
const EPOCH: u64 = 1_704_067_200;

fn creds() -> Credentials {
    Credentials::new(
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        None,
        None,
        "bench",
    )
}

fn params() -> SigningParams {
    SigningParams::new(HOST, REGION, Action::DbConnectAdmin)
        .and_then(|p| p.with_expires_in(Duration::from_secs(900)))
        .unwrap_or_else(|e| panic!("bench params: {e}"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"))
}

fn token_fresh(c: &mut Criterion) {
    let rt = runtime();
    let params = params();
    let creds = creds();
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(EPOCH);
    let mut group = c.benchmark_group("token_fresh");

    let signer = Signer::new();
    let mut tick = 0u64;
    group.bench_function("dsql-rs", |b| {
        b.iter(|| {
            // A new second each time: a different token, the day's key still cached.
            tick = (tick + 1) % 86_400;
            let at = at + Duration::from_secs(tick);
            rt.block_on(async { signer.sign(black_box(&params), black_box(&creds), at) })
        })
    });

    group.bench_function("dsql-rs-sync", |b| {
        b.iter(|| {
            tick = (tick + 1) % 86_400;
            signer.sign(
                black_box(&params),
                black_box(&creds),
                at + Duration::from_secs(tick),
            )
        })
    });

    group.bench_function("dsql-rs-cold-key", |b| {
        b.iter(|| {
            tick = (tick + 1) % 86_400;
            sign(
                black_box(&params),
                black_box(&creds),
                at + Duration::from_secs(tick),
            )
        })
    });

    let sdk = aws_types::SdkConfig::builder()
        .credentials_provider(SharedCredentialsProvider::new(creds.clone()))
        .time_source(aws_smithy_async::time::StaticTimeSource::from_secs(EPOCH))
        .build();
    let generator = AuthTokenGenerator::new(
        Config::builder()
            .hostname(HOST)
            .region(Region::new(REGION))
            .expires_in(900)
            .build()
            .unwrap_or_else(|e| panic!("anchor config: {e}")),
    );
    group.bench_function("anchor", |b| {
        b.iter(|| rt.block_on(generator.db_connect_admin_auth_token(black_box(&sdk))))
    });
    group.finish();
}

fn token_cached(c: &mut Criterion) {
    let params = params();
    let provider = TokenProvider::new(creds());
    // Fill the cache first.
    let first = provider.token(&params).now_or_never();
    assert!(
        matches!(first, Some(Ok(_))),
        "the first token is signed without waiting"
    );
    let mut group = c.benchmark_group("token_cached");
    group.bench_function("dsql-rs", |b| {
        b.iter(|| provider.token(black_box(&params)).now_or_never())
    });

    let fixed = TokenProvider::builder()
        .credentials(creds())
        .clock(std::sync::Arc::new(FixedClock(SystemTime::now())))
        .build()
        .unwrap_or_else(|e| panic!("provider: {e}"));
    let first = fixed.token(&params).now_or_never();
    assert!(
        matches!(first, Some(Ok(_))),
        "the first token is signed without waiting"
    );
    group.bench_function("dsql-rs-fixed-clock", |b| {
        b.iter(|| fixed.token(black_box(&params)).now_or_never())
    });
    group.finish();
}

/// A clock that always shows the same instant, read without a lock or a system call.
#[derive(Debug)]
struct FixedClock(SystemTime);

impl dsql_auth_core::Clock for FixedClock {
    fn now(&self) -> SystemTime {
        self.0
    }
}

// criterion_group! makes a `pub fn benches` without docs (the workspace denies missing_docs).
#[allow(missing_docs)]
mod groups {
    use super::*;
    criterion_group!(benches, token_fresh, token_cached);
}
criterion_main!(groups::benches);
