//! Property tests: no input makes a parser panic; Display and parse round-trip; retry delays stay
//! within their cap and budgets.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use dsql_auth_core::{Action, ConnectOptions, Endpoint, RetryPolicy, SslMode, SslNegotiation};
use proptest::prelude::*;

/// Pieces that make strings close to valid ones, so the parsers' deeper branches get exercised.
const FRAGMENTS: &[&str] = &[
    "postgres://",
    "postgresql://",
    "POSTGRES://",
    "mysql://",
    "abcdefghijklmnopqrstuvwxyz",
    ".dsql.",
    ".dsql-fips.",
    ".dsql-fnh4.",
    "us-east-1",
    "us-gov-west-1",
    ".on.aws",
    ".vpce.amazonaws.com",
    "vpce-0abc-xyz",
    "localhost",
    "127.0.0.1",
    "::1",
    "[",
    "]",
    "[::1]",
    ":",
    ":5432",
    ":99999",
    "@",
    "admin",
    "user:pw@",
    "/",
    "/postgres",
    "?",
    "&",
    "=",
    " = ",
    " ",
    "\t",
    "%",
    "%2F",
    "%20",
    "%ZZ",
    "%C3",
    "%FF",
    "%00",
    "'",
    "\\",
    "\\'",
    ".",
    "..",
    "-",
    "_",
    ",",
    "#",
    "é",
    "\u{0}",
    "host=",
    "hostaddr=",
    "port=",
    "user=",
    "dbname=",
    "sslmode=",
    "verify-full",
    "disable",
    "sslrootcert=",
    "sslnegotiation=",
    "direct",
    "application_name=",
    "connect_timeout=",
    "options=",
    "-c x=y",
    "region=",
    "aws_region=",
    "awsRegion=",
    "profile=",
    "token_duration_secs=",
    "expires_in=",
    "604800",
    "604801",
    "0",
    "cluster_id=",
    "clusterId=",
    "action=",
    "DbConnectAdmin",
    "password=",
    "unknown=",
];

const HOSTS: &[&str] = &[
    "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ.DSQL-FIPS.US-WEST-2.ON.AWS.",
    "abcdefghijklmnopqrstuvwxyz.dsql-fnh4.eu-west-1.on.aws",
    "abcdefghijklmnopqrstuvwxyz",
    "vpce-0abc-xyz.dsql-fnh4.eu-west-1.vpce.amazonaws.com",
    "localhost",
    "127.0.0.1",
    "[::1]",
    "::1",
    "",
    "h1,h2",
    "[::1",
    "dsql.us-east-1.on.aws",
    "a..b",
    "local%68ost",
];

const KEYS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "user",
    "dbname",
    "sslmode",
    "sslrootcert",
    "sslnegotiation",
    "application_name",
    "connect_timeout",
    "options",
    "region",
    "aws_region",
    "awsRegion",
    "profile",
    "aws_profile",
    "token_duration_secs",
    "tokenDurationSecs",
    "expires_in",
    "cluster_id",
    "clusterId",
    "action",
    "password",
    "bogus",
];

const VALUES: &[&str] = &[
    "us-east-1",
    "eu-west-1",
    "US-WEST-2",
    "abcdefghijklmnopqrstuvwxyz",
    "localhost",
    "900",
    "0",
    "604801",
    "5432",
    "require",
    "verify-full",
    "disable",
    "direct",
    "DbConnect",
    "DbConnectAdmin",
    "",
    "10.0.0.1",
    "::1",
    "%2F",
    "%ZZ",
    "a b",
    "x",
];

/// A URL put together from plausible parts.
fn structured_url() -> impl Strategy<Value = String> {
    (
        prop::sample::select(&["postgres://", "postgresql://", "POSTGRES://"][..]),
        prop::sample::select(&["", "admin@", "app%40x@", "u:p@", "@"][..]),
        prop::sample::select(HOSTS),
        prop::sample::select(&["", ":5432", ":0", ":99999", ":", ":x"][..]),
        prop::sample::select(&["", "/", "/postgres", "/a%2Fb", "/%ZZ"][..]),
        prop::collection::vec(
            (prop::sample::select(KEYS), prop::sample::select(VALUES)),
            0..5,
        ),
    )
        .prop_map(|(scheme, user, host, port, path, query)| {
            let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let sep = if query.is_empty() { "" } else { "?" };
            format!("{scheme}{user}{host}{port}{path}{sep}{}", query.join("&"))
        })
}

/// A key/value string put together from plausible parts.
fn structured_kv() -> impl Strategy<Value = String> {
    (
        prop::sample::select(HOSTS),
        prop::collection::vec(
            (
                prop::sample::select(KEYS),
                prop::sample::select(&["=", " = ", "=\t"][..]),
                prop::sample::select(VALUES),
                any::<bool>(),
            ),
            0..5,
        ),
    )
        .prop_map(|(host, pairs)| {
            let mut out = format!("host={host}");
            for (k, eq, v, quoted) in pairs {
                let v = if quoted {
                    format!("'{}'", v.replace('\'', "\\'"))
                } else {
                    v.to_owned()
                };
                out.push_str(&format!(" {k}{eq}{v}"));
            }
            out
        })
}

/// Fragment soup, or a structured string with one fragment spliced in somewhere.
fn near_valid() -> impl Strategy<Value = String> {
    let soup = prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(FRAGMENTS).prop_map(str::to_owned),
            1 => "[a-z0-9.:%\\[\\]@/?&=' -]{0,6}",
        ],
        0..14,
    )
    .prop_map(|parts| parts.concat());
    let structured = prop_oneof![structured_url(), structured_kv()];
    let spliced = (
        structured_url(),
        prop::sample::select(FRAGMENTS),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(s, frag, at)| {
            let mut at = at.index(s.len() + 1);
            while !s.is_char_boundary(at) {
                at -= 1;
            }
            format!("{}{frag}{}", &s[..at], &s[at..])
        });
    prop_oneof![soup, structured, spliced]
}

fn any_input() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), near_valid(), "\\PC{0,40}",]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn endpoint_parse_never_panics(host in any_input(), region in prop::option::of(any_input()), id in prop::option::of(any_input())) {
        let _ = Endpoint::parse(&host, region.as_deref());
        if let Ok(ep) = Endpoint::parse_with_cluster_id(&host, region.as_deref(), id.as_deref()) {
            // A successful parse is internally consistent.
            prop_assert!(!ep.connect_host().is_empty());
            prop_assert!(!ep.sign_host().is_empty());
            prop_assert!(!ep.region().is_empty());
            prop_assert_eq!(ep.needs_cluster_id_option(), ep.connect_host() != ep.sign_host());
            if ep.needs_cluster_id_option() {
                prop_assert!(ep.cluster_id().is_some());
            }
            let _ = ep.clone().with_sign_host(&host);
        }
    }

    #[test]
    fn connect_options_parse_never_panics(s in any_input()) {
        if let Ok(o) = ConnectOptions::parse(&s) {
            // A valid endpoint always makes valid signing parameters.
            prop_assert_eq!(o.endpoint().is_ok(), o.signing_params().is_ok());
            let _ = o.startup_options();
            // Whatever parses also formats to something that parses back to the same options.
            let again = ConnectOptions::parse(&o.to_string());
            prop_assert_eq!(again.ok(), Some(o));
        }
    }

    #[test]
    fn parse_with_env_never_panics(
        s in any_input(),
        vars in prop::collection::hash_map(
            prop::sample::select(&[
                "PGHOST", "PGHOSTADDR", "PGPORT", "PGUSER", "PGDATABASE", "PGSSLMODE", "PGSSLROOTCERT",
                "PGSSLNEGOTIATION", "PGAPPNAME", "PGCONNECT_TIMEOUT", "PGOPTIONS", "AWS_REGION",
                "AWS_DEFAULT_REGION", "AWS_PROFILE",
            ][..]),
            any_input(),
            0..6,
        ),
    ) {
        let vars: HashMap<&str, String> = vars;
        let _ = ConnectOptions::parse_with_env(&s, |k| vars.get(k).cloned());
    }

    #[test]
    fn display_round_trips(o in connect_options()) {
        let text = o.to_string();
        let parsed = ConnectOptions::parse(&text);
        prop_assert!(parsed.is_ok(), "{} did not parse: {:?}", text, parsed.err().map(|e| e.to_string()));
        prop_assert_eq!(parsed.ok(), Some(o));
    }

    #[test]
    fn retry_delay_never_exceeds_the_cap(
        initial_ns in any::<u64>(),
        max_ns in any::<u64>(),
        multiplier in prop_oneof![any::<f64>(), 0.5f64..4.0, Just(f64::NAN), Just(f64::INFINITY)],
        retry in any::<u32>(),
        random in prop_oneof![0.0f64..1.0, any::<f64>()],
    ) {
        let p = RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_nanos(initial_ns),
            max_backoff: Duration::from_nanos(max_ns),
            multiplier,
            max_elapsed: None,
        };
        prop_assert!(p.delay(retry, random) <= p.max_backoff);
    }

    #[test]
    fn retry_budgets_are_respected(
        max_attempts in 0u32..20,
        attempts_made in any::<u32>(),
        elapsed_ms in 0u64..60_000,
        budget_ms in prop::option::of(0u64..60_000),
        random in 0.0f64..1.0,
    ) {
        let p = RetryPolicy { max_attempts, max_elapsed: budget_ms.map(Duration::from_millis), ..RetryPolicy::connect() };
        let elapsed = Duration::from_millis(elapsed_ms);
        match p.next_delay(attempts_made, elapsed, random) {
            Some(d) => {
                prop_assert!(attempts_made < max_attempts);
                prop_assert!(d <= p.max_backoff);
                if let Some(budget) = p.max_elapsed {
                    prop_assert!(elapsed + d <= budget);
                    prop_assert!(elapsed < budget);
                }
            }
            None => {
                let attempts_spent = attempts_made >= max_attempts;
                let time_spent = p.max_elapsed.is_some_and(|b| {
                    elapsed >= b || elapsed + p.delay(attempts_made.saturating_sub(1), random) > b
                });
                prop_assert!(attempts_spent || time_spent);
            }
        }
    }

    #[test]
    fn retry_loop_ends_within_budgets(random in prop::collection::vec(0.0f64..1.0, 64)) {
        // Simulate a caller whose attempts take no time: the loop must end within both budgets.
        for p in [RetryPolicy::occ(), RetryPolicy::connect()] {
            let mut elapsed = Duration::ZERO;
            let mut attempts = 1;
            while let Some(d) = p.next_delay(attempts, elapsed, random[attempts as usize % random.len()]) {
                elapsed += d;
                attempts += 1;
            }
            prop_assert!(attempts <= p.max_attempts);
            prop_assert!(elapsed <= p.max_elapsed.unwrap_or(Duration::MAX));
        }
    }
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            "[a-z0-9]{26}",
            "(us|eu|ap|cn)-(east|west|north|south|gov-west)-[1-9]",
            "dsql|dsql-fips|dsql-fnh4"
        )
            .prop_map(|(id, r, s)| format!("{id}.{s}.{r}.on.aws")),
        "[a-z0-9]{26}",
        "[a-zA-Z]([a-zA-Z0-9-]{0,9}[a-zA-Z0-9])?(\\.[a-z][a-z0-9_]{0,8}){0,3}\\.?",
        any::<std::net::Ipv4Addr>().prop_map(|ip| ip.to_string()),
        any::<std::net::Ipv6Addr>().prop_map(|ip| ip.to_string()),
    ]
}

/// Non-empty text without NUL (empty means "not given"; NUL cannot go into a startup packet).
fn text() -> impl Strategy<Value = String> {
    "[^\\x00]{1,16}"
}

fn connect_options() -> impl Strategy<Value = ConnectOptions> {
    let part1 = (
        host(),
        prop::option::of(prop_oneof![
            any::<std::net::Ipv4Addr>().prop_map(std::net::IpAddr::from),
            any::<std::net::Ipv6Addr>().prop_map(std::net::IpAddr::from),
        ]),
        1u16..=65535,
        text(),
        text(),
        prop::option::of("[a-z]{2}(-[a-z]{2,9}){1,2}-[0-9]{1,2}"),
        prop::option::of("[a-z0-9]{26}"),
        prop::option::of(text()),
    );
    let part2 = (
        1u64..=604_800,
        prop::option::of(prop_oneof![
            Just(Action::DbConnect),
            Just(Action::DbConnectAdmin)
        ]),
        prop_oneof![
            Just(SslMode::Require),
            Just(SslMode::VerifyCa),
            Just(SslMode::VerifyFull)
        ],
        prop::option::of(text()),
        prop_oneof![Just(SslNegotiation::Postgres), Just(SslNegotiation::Direct)],
        prop::option::of(text()),
        prop::option::of(1u64..=u64::from(u32::MAX)),
        prop::option::of(text()),
    );
    (part1, part2).prop_map(
        |(
            (host, hostaddr, port, user, dbname, region, cluster_id, profile),
            (
                secs,
                action,
                sslmode,
                sslrootcert,
                sslnegotiation,
                application_name,
                timeout,
                options,
            ),
        )| {
            let mut o = ConnectOptions::new(host);
            o.hostaddr = hostaddr;
            o.port = port;
            o.user = user;
            o.dbname = dbname;
            o.region = region;
            o.cluster_id = cluster_id;
            o.profile = profile;
            o.token_duration = Duration::from_secs(secs);
            o.action = action;
            o.sslmode = sslmode;
            o.sslrootcert = sslrootcert.map(PathBuf::from);
            o.sslnegotiation = sslnegotiation;
            o.application_name = application_name;
            o.connect_timeout = timeout.map(Duration::from_secs);
            o.options = options;
            o
        },
    )
}

/// The structured generator must reach the parsers' success paths too, or the properties above
/// would only ever see errors.
#[test]
fn near_valid_inputs_reach_success_paths() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut urls, mut kvs, mut endpoints) = (0, 0, 0);
    for _ in 0..20_000 {
        let s = near_valid()
            .new_tree(&mut runner)
            .expect("strategy")
            .current();
        if let Ok(o) = ConnectOptions::parse(&s) {
            if s.trim_start().to_ascii_lowercase().starts_with("postgres") {
                urls += 1;
            } else {
                kvs += 1;
            }
            if o.endpoint().is_ok() {
                endpoints += 1;
            }
        }
    }
    assert!(
        urls > 100 && kvs > 100 && endpoints > 100,
        "urls {urls}, key/values {kvs}, endpoints {endpoints}"
    );
}
