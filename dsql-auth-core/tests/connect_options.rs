//! Connection strings: URL and key/value forms, keys and aliases, validation, environment, Display.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use dsql_auth_core::{Action, ConnectOptions, ErrorKind, SslMode, SslNegotiation};

const ID: &str = "abcdefghijklmnopqrstuvwxyz";
const HOST: &str = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws";

fn parse(s: &str) -> ConnectOptions {
    ConnectOptions::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn err(s: &str) -> String {
    let e = ConnectOptions::parse(s).expect_err(s);
    assert_eq!(e.kind(), ErrorKind::InvalidConnectionString, "{s}: {e}");
    e.to_string()
}

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

#[test]
fn defaults() {
    let o = parse(&format!("postgres://{HOST}"));
    assert_eq!(o, ConnectOptions::new(HOST));
    assert_eq!(o.port, 5432);
    assert_eq!(o.user, "admin");
    assert_eq!(o.dbname, "postgres");
    assert_eq!(o.token_duration, Duration::from_secs(900));
    assert_eq!(o.sslmode, SslMode::VerifyFull);
    assert_eq!(o.sslnegotiation, SslNegotiation::Postgres);
    assert_eq!(o.effective_action(), Action::DbConnectAdmin);
    let p = o.signing_params().unwrap();
    assert_eq!(p.host(), HOST);
    assert_eq!(p.region(), "us-east-1");
    assert_eq!(p.action(), Action::DbConnectAdmin);
    assert_eq!(p.expires_in(), Duration::from_secs(900));
}

#[test]
fn full_url() {
    let o = parse(&format!(
        "postgresql://app_user@{HOST}:6543/mydb?sslmode=verify-ca&sslrootcert=/etc/ca.pem&sslnegotiation=direct\
         &application_name=svc&connect_timeout=7&options=-c%20search_path%3Dapp&hostaddr=10.0.0.5\
         &profile=prod&token_duration_secs=600&region=us-east-1"
    ));
    assert_eq!(o.host, HOST);
    assert_eq!(o.user, "app_user");
    assert_eq!(o.port, 6543);
    assert_eq!(o.dbname, "mydb");
    assert_eq!(o.sslmode, SslMode::VerifyCa);
    assert_eq!(o.sslrootcert, Some(PathBuf::from("/etc/ca.pem")));
    assert_eq!(o.sslnegotiation, SslNegotiation::Direct);
    assert_eq!(o.application_name.as_deref(), Some("svc"));
    assert_eq!(o.connect_timeout, Some(Duration::from_secs(7)));
    assert_eq!(o.options.as_deref(), Some("-c search_path=app"));
    assert_eq!(o.hostaddr, Some("10.0.0.5".parse().unwrap()));
    assert_eq!(o.profile.as_deref(), Some("prod"));
    assert_eq!(o.token_duration, Duration::from_secs(600));
    assert_eq!(o.effective_action(), Action::DbConnect);
    let ep = o.endpoint().unwrap();
    assert_eq!(ep.port(), 6543);
    assert_eq!(ep.connect_host(), HOST);
    let p = o.signing_params().unwrap();
    assert_eq!(p.action(), Action::DbConnect);
    assert_eq!(p.expires_in(), Duration::from_secs(600));
}

#[test]
fn scheme_is_case_insensitive_and_whitespace_trimmed() {
    assert_eq!(parse(&format!("  POSTGRES://{HOST}\n")).host, HOST);
    assert_eq!(parse(&format!("PostgreSQL://{HOST}")).host, HOST);
}

#[test]
fn url_ipv6_hosts() {
    let o = parse("postgres://[::1]:5433/postgres?region=us-east-1");
    assert_eq!(o.host, "::1");
    assert_eq!(o.port, 5433);
    assert_eq!(o.endpoint().unwrap().connect_host(), "::1");
    let o = parse("postgres://[2001:db8::1]?region=us-east-1");
    assert_eq!(o.host, "2001:db8::1");
    assert!(err("postgres://::1:5432/db").contains("brackets"));
    assert!(err("postgres://[::1/db").contains("]"));
    assert!(err("postgres://[::1]x/db").contains(":port"));
}

#[test]
fn percent_decoding() {
    let o = parse(&format!(
        "postgres://my%40user@{HOST}/a%2Fb?application_name=caf%C3%A9%20%26%20bar&options=%2B%3D"
    ));
    assert_eq!(o.user, "my@user");
    assert_eq!(o.dbname, "a/b");
    assert_eq!(o.application_name.as_deref(), Some("café & bar"));
    assert_eq!(
        o.options.as_deref(),
        Some("+="),
        "`+` is not a space in libpq URLs"
    );
    // Host percent-encoded (libpq allows it).
    assert_eq!(
        parse("postgres://local%68ost?region=us-east-1").host,
        "localhost"
    );
    for bad in ["%", "%4", "%zz", "%+1", "%-1"] {
        let msg = err(&format!("postgres://{HOST}/db?application_name={bad}"));
        assert!(msg.contains("percent-escape"), "{bad}: {msg}");
        assert!(msg.contains("application_name"), "{bad}: {msg}");
    }
    let msg = err(&format!("postgres://{HOST}/%FF%FE"));
    assert!(msg.contains("UTF-8"), "{msg}");
    let msg = err(&format!("postgres://{HOST}/db?x%ZZ=1"));
    assert!(msg.contains("percent-escape"), "{msg}");
}

#[test]
fn url_syntax_errors() {
    assert!(err(&format!("postgres://{HOST}/my db")).contains("%20"));
    assert!(err(&format!("postgres://{HOST}/db#frag")).contains("%23"));
    assert!(err(&format!("postgres://{HOST}/db?sslmode")).contains("no value"));
    assert!(err("postgres://h1,h2/db").contains("several hosts"));
    assert!(err("mysql://host/db").contains("postgres://"));
    assert!(err("postgres:///db").contains("no host"));
    assert!(err("postgres://").contains("no host"));
}

#[test]
fn key_value_form() {
    let o = parse(&format!(
        "host={HOST} port = 6000 user='my user' dbname=db\\ x application_name='it\\'s \\\\ here' sslmode=require \
         options=''"
    ));
    assert_eq!(o.host, HOST);
    assert_eq!(o.port, 6000);
    assert_eq!(o.user, "my user");
    assert_eq!(o.dbname, "db x");
    assert_eq!(o.application_name.as_deref(), Some("it's \\ here"));
    assert_eq!(o.sslmode, SslMode::Require);
    assert_eq!(o.options, None, "an empty value means not given");
    // Tabs and newlines separate too.
    let o = parse(&format!("host={HOST}\tuser=u\n dbname=d"));
    assert_eq!((o.user.as_str(), o.dbname.as_str()), ("u", "d"));
}

#[test]
fn key_value_syntax_errors() {
    assert!(err("host").contains("expected `=`"));
    assert!(err("host localhost").contains("expected `=`"));
    assert!(err("=localhost").contains("no key"));
    assert!(err("host='localhost").contains("closing"));
    assert!(err("host='localhost\\").contains("ends with"));
    assert!(err("host=localhost\\").contains("ends with"));
    assert!(err("").contains("no host"));
    assert!(err("   ").contains("no host"));
}

#[test]
fn key_value_ipv6_host_with_or_without_brackets() {
    assert_eq!(parse("host=::1 region=us-east-1").host, "::1");
    assert_eq!(parse("host=[::1] region=us-east-1").host, "::1");
}

#[test]
fn aliases() {
    for key in ["region", "aws_region", "awsRegion"] {
        let o = parse(&format!("host=localhost {key}=eu-west-1"));
        assert_eq!(o.region.as_deref(), Some("eu-west-1"), "{key}");
    }
    for key in ["profile", "aws_profile", "awsProfile"] {
        let o = parse(&format!("host=localhost region=us-east-1 {key}=dev"));
        assert_eq!(o.profile.as_deref(), Some("dev"), "{key}");
    }
    for key in [
        "token_duration_secs",
        "tokenDurationSecs",
        "token_duration",
        "expires_in",
    ] {
        let o = parse(&format!("host={HOST} {key}=3600"));
        assert_eq!(o.token_duration, Duration::from_secs(3600), "{key}");
    }
    for key in ["cluster_id", "clusterId"] {
        let o = parse(&format!(
            "host=localhost region=us-east-1 {key}={}",
            ID.to_uppercase()
        ));
        assert_eq!(o.cluster_id.as_deref(), Some(ID), "{key}");
    }
}

#[test]
fn duplicate_keys_last_wins() {
    let o = parse(&format!("host=a.example host={HOST} port=1 port=2"));
    assert_eq!(o.host, HOST);
    assert_eq!(o.port, 2);
    // Aliases are the same key.
    let o = parse("host=localhost region=us-east-1 aws_region=eu-west-1");
    assert_eq!(o.region.as_deref(), Some("eu-west-1"));
    // In a URL, the query comes after the host part.
    let o = parse(
        "postgres://u1@a.example:1/d1?host=localhost&user=u2&port=2&dbname=d2&region=us-east-1",
    );
    assert_eq!(
        (o.host.as_str(), o.user.as_str(), o.port, o.dbname.as_str()),
        ("localhost", "u2", 2, "d2")
    );
    // An empty later value un-sets the key.
    let o = parse(&format!("host={HOST} user=bob user=''"));
    assert_eq!(o.user, "admin");
}

#[test]
fn password_is_refused_without_echoing_it() {
    for s in [
        format!("postgres://admin:s3cr3tVALUE@{HOST}/postgres"),
        format!("postgres://admin:@{HOST}/postgres"),
        format!("postgres://{HOST}/postgres?password=s3cr3tVALUE"),
        format!("host={HOST} password=s3cr3tVALUE"),
        format!("host={HOST} password='s3cr3tVALUE'"),
        format!("host={HOST} password='s3cr3tVALUE"),
    ] {
        let e = ConnectOptions::parse(&s).unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("s3cr3tVALUE"), "{shown}");
        // The unterminated quote is a syntax error found before the key is looked at.
        let expected = if s.ends_with("'s3cr3tVALUE") {
            "closing"
        } else {
            "IAM tokens"
        };
        assert!(shown.contains(expected), "{s}: {shown}");
    }
    let msg = err(&format!("host={HOST} password=x"));
    assert!(msg.contains("IAM tokens"), "{msg}");
}

#[test]
fn unknown_keys_are_listed_together() {
    let msg = err(&format!("host={HOST} foo=1 sslcert=/x bar=2 foo=3"));
    assert!(
        msg.contains("`foo`") && msg.contains("`sslcert`") && msg.contains("`bar`"),
        "{msg}"
    );
    assert_eq!(msg.matches("`foo`").count(), 1, "{msg}");
    assert!(msg.contains("known keys"), "{msg}");
    let msg = err(&format!(
        "postgres://{HOST}/db?Region=us-east-1&sslMode=require"
    ));
    assert!(
        msg.contains("`Region`") && msg.contains("`sslMode`"),
        "{msg}"
    );
}

#[test]
fn value_validation() {
    let cases: &[(&str, &str)] = &[
        ("port=0", "1-65535"),
        ("port=65536", "1-65535"),
        ("port=+5", "1-65535"),
        ("port=abc", "1-65535"),
        ("port=5432,5433", "1-65535"),
        ("sslmode=disable", "DSQL requires TLS"),
        ("sslmode=allow", "DSQL requires TLS"),
        ("sslmode=prefer", "DSQL requires TLS"),
        ("sslmode=bogus", "verify-full"),
        ("sslnegotiation=tls", "direct"),
        ("connect_timeout=-1", "seconds"),
        ("connect_timeout=1.5", "seconds"),
        ("token_duration_secs=0", "604800"),
        ("token_duration_secs=604801", "604800"),
        ("token_duration_secs=15m", "604800"),
        ("action=DbAdmin", "DbConnectAdmin"),
        ("hostaddr=localhost", "IP address"),
        ("region=us_east_1", "region"),
        ("cluster_id=short", "26"),
        ("host=localhost:99999", "port"),
        ("host=localhost:5432 port=5433", "5433"),
        ("host=/tmp", "Unix"),
    ];
    for (kv, needle) in cases {
        let s = if kv.starts_with("host=") {
            format!("{kv} region=us-east-1")
        } else {
            format!("host={HOST} {kv}")
        };
        let msg = err(&s);
        assert!(msg.contains(needle), "{kv}: {msg}");
        let key = kv.split('=').next().unwrap();
        assert!(msg.contains(key), "{kv}: error should name the key: {msg}");
    }
    assert!(err(&format!("host={HOST} user='a\\\0b'")).contains("NUL"));
}

#[test]
fn accepted_values() {
    let o = parse(&format!(
        "host={HOST} port=65535 connect_timeout=0 token_duration_secs=604800 action=dbconnect"
    ));
    assert_eq!(o.port, 65535);
    assert_eq!(o.connect_timeout, None, "0 means no timeout, as in libpq");
    assert_eq!(o.token_duration, Duration::from_secs(604_800));
    assert_eq!(o.action, Some(Action::DbConnect));
    assert_eq!(
        o.effective_action(),
        Action::DbConnect,
        "the override beats the user rule"
    );
    let o = parse(&format!(
        "host={HOST} user=app action=DbConnectAdmin hostaddr=[::1] token_duration_secs=1"
    ));
    assert_eq!(o.effective_action(), Action::DbConnectAdmin);
    assert_eq!(o.hostaddr, Some("::1".parse().unwrap()));
    assert_eq!(
        o.signing_params().unwrap().expires_in(),
        Duration::from_secs(1)
    );
}

#[test]
fn action_follows_the_user_exactly() {
    assert_eq!(
        parse(&format!("host={HOST} user=admin")).effective_action(),
        Action::DbConnectAdmin
    );
    assert_eq!(
        parse(&format!("host={HOST} user=Admin")).effective_action(),
        Action::DbConnect
    );
    assert_eq!(
        parse(&format!("host={HOST} user=app")).effective_action(),
        Action::DbConnect
    );
}

#[test]
fn endpoint_combinations() {
    // Bare cluster id plus region.
    let o = parse(&format!("host={ID} region=eu-west-1"));
    assert_eq!(
        o.endpoint().unwrap().connect_host(),
        format!("{ID}.dsql.eu-west-1.on.aws")
    );
    // Bare id without region: the endpoint error says what to pass.
    let e = parse(&format!("host={ID}")).endpoint().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidEndpoint);
    assert!(e.to_string().contains("region="), "{e}");
    // Custom host never rewritten.
    let ep = parse("host=localhost region=us-east-1").endpoint().unwrap();
    assert_eq!(ep.connect_host(), "localhost");
    assert_eq!(ep.sign_host(), "localhost");
    // Custom host plus cluster id: PrivateLink without DNS.
    let o = parse(&format!("host=10.0.0.9 region=us-west-2 cluster_id={ID}"));
    let ep = o.endpoint().unwrap();
    assert_eq!(ep.connect_host(), "10.0.0.9");
    assert_eq!(ep.sign_host(), format!("{ID}.dsql.us-west-2.on.aws"));
    assert!(ep.needs_cluster_id_option());
    assert_eq!(
        o.signing_params().unwrap().host(),
        format!("{ID}.dsql.us-west-2.on.aws")
    );
    // VPC endpoint host plus cluster id.
    let vpce = "vpce-0abc-xyz.dsql-fnh4.us-west-2.vpce.amazonaws.com";
    let o = parse(&format!("host={vpce} cluster_id={ID}"));
    assert_eq!(
        o.signing_params().unwrap().host(),
        format!("{ID}.dsql.us-west-2.on.aws")
    );
    assert_eq!(o.signing_params().unwrap().region(), "us-west-2");
    // Contradiction names both regions.
    let e = parse(&format!("host={HOST} region=us-west-2"))
        .signing_params()
        .unwrap_err();
    assert!(
        e.to_string().contains("us-east-1") && e.to_string().contains("us-west-2"),
        "{e}"
    );
    // dsql-local style: DSQL host for SNI and signing, hostaddr for the socket.
    let o = parse(&format!(
        "host={HOST} hostaddr=127.0.0.1 port=40000 sslrootcert=/tmp/ca.pem region=us-east-1"
    ));
    let ep = o.endpoint().unwrap();
    assert_eq!(ep.connect_host(), HOST);
    assert_eq!(ep.port(), 40000);
    assert!(!ep.needs_cluster_id_option());
}

#[test]
fn environment_fallbacks() {
    let vars = env(&[
        ("PGHOST", HOST),
        ("PGHOSTADDR", "10.1.1.1"),
        ("PGPORT", "6432"),
        ("PGUSER", "envuser"),
        ("PGDATABASE", "envdb"),
        ("PGSSLMODE", "verify-ca"),
        ("PGSSLROOTCERT", "/env/ca.pem"),
        ("PGSSLNEGOTIATION", "direct"),
        ("PGAPPNAME", "envapp"),
        ("PGCONNECT_TIMEOUT", "9"),
        ("PGOPTIONS", "-c x=y"),
        ("AWS_PROFILE", "envprofile"),
    ]);
    let o = ConnectOptions::parse_with_env("", &vars).unwrap();
    assert_eq!(o.host, HOST);
    assert_eq!(o.hostaddr, Some("10.1.1.1".parse().unwrap()));
    assert_eq!(o.port, 6432);
    assert_eq!(o.user, "envuser");
    assert_eq!(o.dbname, "envdb");
    assert_eq!(o.sslmode, SslMode::VerifyCa);
    assert_eq!(o.sslrootcert, Some(PathBuf::from("/env/ca.pem")));
    assert_eq!(o.sslnegotiation, SslNegotiation::Direct);
    assert_eq!(o.application_name.as_deref(), Some("envapp"));
    assert_eq!(o.connect_timeout, Some(Duration::from_secs(9)));
    assert_eq!(o.options.as_deref(), Some("-c x=y"));
    assert_eq!(o.profile.as_deref(), Some("envprofile"));

    // Explicit values win, in both forms.
    let o = ConnectOptions::parse_with_env("host=localhost port=1 user=me region=eu-west-1", &vars)
        .unwrap();
    assert_eq!(
        (o.host.as_str(), o.port, o.user.as_str()),
        ("localhost", 1, "me")
    );
    assert_eq!(
        o.dbname, "envdb",
        "keys not given still come from the environment"
    );
    let o = ConnectOptions::parse_with_env("postgres://me@localhost:2/db?region=eu-west-1", &vars)
        .unwrap();
    assert_eq!(
        (o.host.as_str(), o.port, o.user.as_str(), o.dbname.as_str()),
        ("localhost", 2, "me", "db")
    );

    // `parse` never reads the environment.
    assert!(ConnectOptions::parse("").is_err());
}

#[test]
fn environment_region_rules() {
    // AWS_REGION before AWS_DEFAULT_REGION, for hosts that carry no region.
    let both = env(&[
        ("AWS_REGION", "eu-west-1"),
        ("AWS_DEFAULT_REGION", "us-west-2"),
    ]);
    let o = ConnectOptions::parse_with_env("host=localhost", &both).unwrap();
    assert_eq!(o.region.as_deref(), Some("eu-west-1"));
    let fallback = env(&[("AWS_DEFAULT_REGION", "us-west-2")]);
    let o = ConnectOptions::parse_with_env(&format!("host={ID}"), &fallback).unwrap();
    assert_eq!(
        o.endpoint().unwrap().connect_host(),
        format!("{ID}.dsql.us-west-2.on.aws")
    );
    // A DSQL hostname's own region is not contradicted by the environment.
    let o = ConnectOptions::parse_with_env(&format!("host={HOST}"), &both).unwrap();
    assert_eq!(o.region, None);
    assert_eq!(o.signing_params().unwrap().region(), "us-east-1");
    // Explicit region still wins over the environment.
    let o = ConnectOptions::parse_with_env("host=localhost region=ap-south-1", &both).unwrap();
    assert_eq!(o.region.as_deref(), Some("ap-south-1"));
    // Empty variables are ignored.
    let empty = env(&[
        ("AWS_REGION", ""),
        ("AWS_DEFAULT_REGION", "us-west-2"),
        ("PGUSER", ""),
    ]);
    let o = ConnectOptions::parse_with_env("host=localhost", &empty).unwrap();
    assert_eq!(o.region.as_deref(), Some("us-west-2"));
    assert_eq!(o.user, "admin");
}

#[test]
fn environment_errors_name_the_variable() {
    let e =
        ConnectOptions::parse_with_env(&format!("host={HOST}"), env(&[("PGSSLMODE", "prefer")]))
            .unwrap_err();
    assert!(
        e.to_string().contains("PGSSLMODE") && e.to_string().contains("DSQL requires TLS"),
        "{e}"
    );
    let e = ConnectOptions::parse_with_env(&format!("host={HOST}"), env(&[("PGPORT", "x")]))
        .unwrap_err();
    assert!(e.to_string().contains("PGPORT"), "{e}");
    let e = ConnectOptions::parse_with_env("", env(&[])).unwrap_err();
    assert!(e.to_string().contains("PGHOST"), "{e}");
}

#[test]
fn display_is_a_canonical_url() {
    assert_eq!(
        ConnectOptions::new(HOST).to_string(),
        format!("postgres://{HOST}")
    );
    let mut o = ConnectOptions::new("::1");
    o.user = "me@x".into();
    o.port = 6000;
    o.dbname = "a/b c".into();
    o.region = Some("us-east-1".into());
    o.cluster_id = Some(ID.into());
    o.application_name = Some("café&=?".into());
    o.token_duration = Duration::from_secs(60);
    o.action = Some(Action::DbConnect);
    o.sslmode = SslMode::Require;
    o.sslnegotiation = SslNegotiation::Direct;
    o.connect_timeout = Some(Duration::from_secs(3));
    o.sslrootcert = Some("/tmp/my ca.pem".into());
    o.options = Some("-c a=b".into());
    o.hostaddr = Some("127.0.0.1".parse().unwrap());
    o.profile = Some("p".into());
    let s = o.to_string();
    assert!(
        s.starts_with("postgres://me%40x@[::1]:6000/a%2Fb%20c?"),
        "{s}"
    );
    assert!(!s.contains(' '), "{s}");
    assert_eq!(parse(&s), o);
}

/// Set in the child process that `from_env_and_str_reads_the_process_environment` starts.
const ENV_CHILD: &str = "DSQL_AUTH_CORE_TEST_ENV_CHILD";
const CHILD_SAW: &str = "child: values came from the process environment";

/// The test starts itself again as a child process with PGAPPNAME and PGPORT set (the parent's
/// environment is left alone, so no other test can see them), and the child asserts that
/// `from_env_and_str` picked them up. A second child without them must fail the same assertions,
/// so the check cannot pass whatever the environment holds.
#[test]
fn from_env_and_str_reads_the_process_environment() {
    if std::env::var_os(ENV_CHILD).is_some() {
        let o = ConnectOptions::from_env_and_str(&format!("host={HOST}")).unwrap();
        assert_eq!(o.application_name.as_deref(), Some("from-the-env"));
        assert_eq!(o.port, 6543);
        // A value in the string beats the environment.
        let o = ConnectOptions::from_env_and_str(&format!("host={HOST} port=5433")).unwrap();
        assert_eq!(o.port, 5433);
        assert_eq!(o.application_name.as_deref(), Some("from-the-env"));
        println!("{CHILD_SAW}");
        return;
    }
    let child = |with_vars: bool| {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "from_env_and_str_reads_the_process_environment",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_CHILD, "1")
        .env_remove("PGAPPNAME")
        .env_remove("PGPORT");
        if with_vars {
            cmd.env("PGAPPNAME", "from-the-env").env("PGPORT", "6543");
        }
        let out = cmd.output().expect("the test binary starts again");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), format!("{stdout}{stderr}"))
    };
    let (ok, output) = child(true);
    assert!(
        ok && output.contains(CHILD_SAW),
        "child with the variables: {output}"
    );
    let (ok, output) = child(false);
    assert!(
        !ok && !output.contains(CHILD_SAW) && output.contains("from-the-env"),
        "child without the variables must fail its assertion: {output}"
    );
}

/// `<host>:5432` and `<host>:443` as users paste them into `host`: the port moves to `port`
/// (`:443`, the signing URL's port, is dropped), the token is signed for the host alone, and a
/// port given twice with two values is an error naming both.
#[test]
fn hosts_pasted_with_a_port() {
    for (s, port) in [
        (format!("host={HOST}:5432"), 5432),
        (format!("host={HOST}:6000"), 6000),
        (format!("host={HOST}:443"), 5432),
        (format!("host={HOST}:443 port=6000"), 6000),
        (format!("host={HOST}:6000 port=6000"), 6000),
        (format!("port=6000 host={HOST}.:6000"), 6000),
        (format!("postgres://ignored.example?host={HOST}:6000"), 6000),
        (format!("postgres://{HOST}?host={HOST}:443"), 5432),
    ] {
        let o = parse(&s);
        assert_eq!(o.host.trim_end_matches('.'), HOST, "{s}");
        assert_eq!(o.port, port, "{s}");
        assert_eq!(o.endpoint().unwrap().port(), port, "{s}");
        assert_eq!(o.signing_params().unwrap().host(), HOST, "{s}");
        // What parsing keeps prints and parses back the same.
        assert_eq!(parse(&o.to_string()), o, "{s}");
    }
    let o = parse("host=[::1]:5433 region=us-east-1");
    assert_eq!((o.host.as_str(), o.port), ("::1", 5433));
    assert_eq!(o.signing_params().unwrap().host(), "[::1]");

    let msg = err(&format!("host={HOST}:5432 port=5433"));
    assert!(
        msg.contains("5432") && msg.contains("5433") && msg.contains("port"),
        "{msg}"
    );
    let msg = err(&format!("postgres://{HOST}:5433?host={HOST}:5432"));
    assert!(msg.contains("give the port once"), "{msg}");

    // The string's host beats PGPORT; two environment variables that disagree are an error.
    let o =
        ConnectOptions::parse_with_env(&format!("host={HOST}:5432"), env(&[("PGPORT", "5433")]))
            .unwrap();
    assert_eq!(o.port, 5432);
    let e = ConnectOptions::parse_with_env(
        "",
        env(&[("PGHOST", &format!("{HOST}:5432")), ("PGPORT", "5433")]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("PGPORT"), "{e}");
    let o =
        ConnectOptions::parse_with_env("", env(&[("PGHOST", &format!("{HOST}:6000"))])).unwrap();
    assert_eq!((o.host.as_str(), o.port), (HOST, 6000));

    // Set in code: the host's port is used unless `port` says otherwise.
    let o = ConnectOptions::new(format!("{HOST}:6000"));
    assert_eq!(o.endpoint().unwrap().port(), 6000);
    assert_eq!(o.signing_params().unwrap().host(), HOST);
    assert_eq!(o.clone().port(6000).endpoint().unwrap().port(), 6000);
    let e = o.port(6001).endpoint().unwrap_err();
    assert!(
        e.to_string().contains("6001") && e.to_string().contains("6000"),
        "{e}"
    );
    assert_eq!(
        ConnectOptions::new(format!("{HOST}:443"))
            .port(6001)
            .endpoint()
            .unwrap()
            .port(),
        6001
    );
}

#[test]
fn startup_options_name_the_cluster_only_when_needed() {
    let o = parse(&format!(
        "host=10.0.0.9 region=us-west-2 cluster_id={ID} options='-c search_path=app'"
    ));
    assert_eq!(
        o.startup_options().unwrap().as_deref(),
        Some(format!("-c search_path=app -c amzn-cluster-id={ID}").as_str())
    );
    let o = parse(&format!("host=10.0.0.9 region=us-west-2 cluster_id={ID}"));
    assert_eq!(
        o.startup_options().unwrap(),
        Some(format!("-c amzn-cluster-id={ID}"))
    );
    let o = parse(&format!("host={HOST} options='-c a=b'"));
    assert_eq!(o.startup_options().unwrap().as_deref(), Some("-c a=b"));
    assert_eq!(
        parse(&format!("host={HOST}")).startup_options().unwrap(),
        None
    );
    assert!(
        parse("host=localhost").startup_options().is_err(),
        "no region: the endpoint error"
    );
}

#[test]
fn huge_inputs_are_handled_in_linear_time_with_bounded_errors() {
    // 200,000 distinct unknown keys: one error, listing a bounded number of them.
    let many: String = (0..200_000).map(|i| format!("k{i}=v ")).collect();
    let msg = err(&format!("host={HOST} {many}"));
    assert!(
        msg.contains("`k0`") && msg.contains("and 199980 more"),
        "{}",
        &msg[..200]
    );
    assert!(msg.len() < 2_000, "{}", msg.len());
    // A megabyte-long value parses (and is then refused as a host).
    let long = "a".repeat(1 << 20);
    let msg = err(&format!("postgres://{long}/db"));
    assert!(msg.contains("253") && msg.len() < 500, "{}", msg.len());
    let msg = err(&format!("host={HOST} port={long}"));
    assert!(msg.contains("1-65535") && msg.len() < 500, "{}", msg.len());
    let msg = err(&format!("host={HOST} {long}=1"));
    assert!(
        msg.contains("unknown") && msg.len() < 1_000,
        "{}",
        msg.len()
    );
    assert_eq!(
        parse(&format!("host={HOST} application_name={long}"))
            .application_name
            .map(|a| a.len()),
        Some(1 << 20)
    );
}

#[test]
fn values_set_in_code_are_checked_too() {
    let mut o = ConnectOptions::new(HOST);
    o.port = 0;
    assert!(o.endpoint().unwrap_err().to_string().contains("1-65535"));
    let mut o = ConnectOptions::new(HOST);
    o.token_duration = Duration::from_secs(604_801);
    assert_eq!(
        o.signing_params().unwrap_err().kind(),
        ErrorKind::InvalidSigningParams
    );
    let mut o = ConnectOptions::new("localhost");
    o.region = Some("US-EAST-1".into());
    assert_eq!(o.endpoint().unwrap().region(), "us-east-1");
}
