//! Endpoint parsing: DSQL hostnames, FIPS and PrivateLink forms, bare cluster ids, custom hosts.

use dsql_auth_core::{Endpoint, ErrorKind};

const ID: &str = "abcdefghijklmnopqrstuvwxyz";
const ID2: &str = "0123456789abcdefghijklmnop";

fn host(region: &str) -> String {
    format!("{ID}.dsql.{region}.on.aws")
}

fn err(host: &str, region: Option<&str>) -> String {
    let e = Endpoint::parse(host, region).expect_err(host);
    assert_eq!(e.kind(), ErrorKind::InvalidEndpoint, "{e}");
    e.to_string()
}

#[test]
fn public_host_gives_region_and_cluster() {
    let ep = Endpoint::parse(&host("us-east-1"), None).unwrap();
    assert_eq!(ep.connect_host(), host("us-east-1"));
    assert_eq!(ep.sign_host(), host("us-east-1"));
    assert_eq!(ep.region(), "us-east-1");
    assert_eq!(ep.cluster_id(), Some(ID));
    assert_eq!(ep.port(), 5432);
    assert!(ep.is_dsql_host());
    assert!(!ep.needs_cluster_id_option());
}

#[test]
fn regions_of_every_partition() {
    for region in [
        "us-east-1",
        "eu-west-2",
        "ap-northeast-1",
        "us-gov-west-1",
        "cn-north-1",
    ] {
        let ep = Endpoint::parse(&host(region), None).unwrap();
        assert_eq!(ep.region(), region);
    }
}

#[test]
fn mixed_case_and_trailing_dot_are_normalised() {
    let ep = Endpoint::parse("ABCDEFGHIJKLMNOPQRSTUVWXYZ.DSQL.US-East-1.On.Aws.", None).unwrap();
    assert_eq!(ep.connect_host(), host("us-east-1"));
    assert_eq!(ep.sign_host(), host("us-east-1"));
    assert_eq!(ep.region(), "us-east-1");
    assert_eq!(ep.cluster_id(), Some(ID));
}

#[test]
fn fips_and_privatelink_dns_service_labels() {
    for service in ["dsql-fips", "dsql-fnh4"] {
        let h = format!("{ID}.{service}.us-west-2.on.aws");
        let ep = Endpoint::parse(&h, None).unwrap();
        assert_eq!(ep.region(), "us-west-2");
        assert_eq!(ep.sign_host(), h, "signed for the host as given");
        assert_eq!(ep.connect_host(), h);
        assert_eq!(ep.cluster_id(), Some(ID));
        assert!(ep.is_dsql_host());
        assert!(!ep.needs_cluster_id_option());
    }
}

#[test]
fn explicit_region_matching_the_host_is_fine() {
    let ep = Endpoint::parse(&host("eu-central-1"), Some("EU-CENTRAL-1")).unwrap();
    assert_eq!(ep.region(), "eu-central-1");
}

#[test]
fn explicit_region_contradicting_the_host_names_both() {
    let msg = err(&host("us-east-1"), Some("us-west-2"));
    assert!(
        msg.contains("us-east-1") && msg.contains("us-west-2"),
        "{msg}"
    );
}

#[test]
fn bare_cluster_id_expands_with_region() {
    let ep = Endpoint::parse(ID, Some("ap-southeast-2")).unwrap();
    assert_eq!(ep.connect_host(), host("ap-southeast-2"));
    assert_eq!(ep.sign_host(), host("ap-southeast-2"));
    assert_eq!(ep.cluster_id(), Some(ID));
    assert!(ep.is_dsql_host());
    // Upper case ids are ids too.
    let ep = Endpoint::parse(&ID.to_uppercase(), Some("us-east-1")).unwrap();
    assert_eq!(ep.connect_host(), host("us-east-1"));
}

#[test]
fn bare_cluster_id_requires_region() {
    let msg = err(ID, None);
    assert!(msg.contains("region="), "{msg}");
}

#[test]
fn custom_hosts_are_never_rewritten() {
    for (given, expected) in [
        ("localhost", "localhost"),
        ("LocalHost.", "localhost"),
        ("db", "db"),
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("[2001:DB8::5]", "2001:db8::5"),
        ("proxy.internal.example.com", "proxy.internal.example.com"),
        ("pgbouncer_1.svc", "pgbouncer_1.svc"),
        // 25 and 27 characters: not cluster ids.
        ("abcdefghijklmnopqrstuvwxy", "abcdefghijklmnopqrstuvwxy"),
        ("abcdefghijklmnopqrstuvwxyza", "abcdefghijklmnopqrstuvwxyza"),
        // Not a DSQL service label.
        (
            "x.lambda-url.us-east-1.on.aws",
            "x.lambda-url.us-east-1.on.aws",
        ),
    ] {
        let ep =
            Endpoint::parse(given, Some("us-east-1")).unwrap_or_else(|e| panic!("{given}: {e}"));
        assert_eq!(ep.connect_host(), expected, "{given}");
        assert_eq!(ep.sign_host(), expected, "{given}");
        assert_eq!(ep.region(), "us-east-1");
        assert_eq!(ep.cluster_id(), None);
        assert!(!ep.is_dsql_host(), "{given}");
        assert!(!ep.needs_cluster_id_option(), "{given}");
    }
}

#[test]
fn custom_hosts_require_region() {
    for h in [
        "localhost",
        "127.0.0.1",
        "::1",
        "[::1]",
        "proxy.example.com",
    ] {
        let msg = err(h, None);
        assert!(msg.contains("region="), "{h}: {msg}");
        assert!(msg.contains("never rewritten"), "{h}: {msg}");
    }
}

#[test]
fn custom_host_with_cluster_id_is_privatelink_without_dns() {
    let ep = Endpoint::parse_with_cluster_id("10.1.2.3", Some("us-east-1"), Some(ID)).unwrap();
    assert_eq!(ep.connect_host(), "10.1.2.3");
    assert_eq!(ep.sign_host(), host("us-east-1"));
    assert_eq!(ep.cluster_id(), Some(ID));
    assert!(!ep.is_dsql_host());
    assert!(ep.needs_cluster_id_option());
    assert_eq!(
        ep.cluster_id_option(),
        Some(format!("-c amzn-cluster-id={ID}"))
    );
}

#[test]
fn vpce_host_reads_region_and_needs_cluster_id() {
    let vpce = "vpce-0123456789abcdef0-abcdefgh.dsql-fnh4.us-east-1.vpce.amazonaws.com";
    let msg = err(vpce, None);
    assert!(msg.contains("cluster_id="), "{msg}");

    let ep = Endpoint::parse_with_cluster_id(vpce, None, Some(ID)).unwrap();
    assert_eq!(ep.connect_host(), vpce);
    assert_eq!(ep.sign_host(), host("us-east-1"));
    assert_eq!(ep.region(), "us-east-1");
    assert_eq!(ep.cluster_id(), Some(ID));
    assert!(ep.is_dsql_host());
    assert!(ep.needs_cluster_id_option());

    // Zonal form, mixed case, trailing dot.
    let zonal = "VPCE-0123-abcd-us-east-1a.DSQL-FNH4.us-east-1.vpce.amazonaws.com.";
    let ep = Endpoint::parse_with_cluster_id(zonal, Some("us-east-1"), Some(&ID.to_uppercase()))
        .unwrap();
    assert_eq!(
        ep.connect_host(),
        zonal.to_lowercase().trim_end_matches('.')
    );
    assert_eq!(ep.sign_host(), host("us-east-1"));

    let e = Endpoint::parse_with_cluster_id(vpce, Some("eu-west-1"), Some(ID)).unwrap_err();
    assert!(
        e.to_string().contains("eu-west-1") && e.to_string().contains("us-east-1"),
        "{e}"
    );
}

#[test]
fn with_sign_host_signs_for_another_host() {
    let ep = Endpoint::parse("localhost", Some("us-east-1"))
        .unwrap()
        .with_sign_host(&host("us-east-1"))
        .unwrap();
    assert_eq!(ep.connect_host(), "localhost");
    assert_eq!(ep.sign_host(), host("us-east-1"));
    assert_eq!(ep.cluster_id(), Some(ID));
    assert!(ep.needs_cluster_id_option());

    // A bare id expands in the endpoint's region.
    let ep = Endpoint::parse("10.0.0.7", Some("eu-west-1"))
        .unwrap()
        .with_sign_host(ID2)
        .unwrap();
    assert_eq!(ep.sign_host(), format!("{ID2}.dsql.eu-west-1.on.aws"));

    // Same host: nothing to send.
    let ep = Endpoint::parse(&host("us-east-1"), None)
        .unwrap()
        .with_sign_host(&host("us-east-1").to_uppercase())
        .unwrap();
    assert!(!ep.needs_cluster_id_option());

    let e = Endpoint::parse("localhost", Some("us-east-1"))
        .unwrap()
        .with_sign_host(&host("us-west-2"))
        .unwrap_err();
    assert!(
        e.to_string().contains("us-west-2") && e.to_string().contains("us-east-1"),
        "{e}"
    );
    let e = Endpoint::parse("localhost", Some("us-east-1"))
        .unwrap()
        .with_sign_host("localhost")
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidEndpoint);
}

#[test]
fn cluster_id_must_agree_with_the_host() {
    let e = Endpoint::parse_with_cluster_id(&host("us-east-1"), None, Some(ID2)).unwrap_err();
    assert!(
        e.to_string().contains(ID) && e.to_string().contains(ID2),
        "{e}"
    );
    let e = Endpoint::parse_with_cluster_id(ID, Some("us-east-1"), Some(ID2)).unwrap_err();
    assert!(e.to_string().contains(ID2), "{e}");
    // Agreeing is fine.
    Endpoint::parse_with_cluster_id(&host("us-east-1"), None, Some(ID)).unwrap();
    let e =
        Endpoint::parse_with_cluster_id("localhost", Some("us-east-1"), Some("short")).unwrap_err();
    assert!(e.to_string().contains("26"), "{e}");
}

#[test]
fn with_port() {
    let ep = Endpoint::parse(&host("us-east-1"), None)
        .unwrap()
        .with_port(6543);
    assert_eq!(ep.port(), 6543);
}

/// Hosts as users paste them, with a port: `:5432` (or any other) is the port to connect to,
/// `:443` is the signing URL's port and is dropped; the token is signed for the host alone.
#[test]
fn hosts_with_a_port() {
    for (pasted, port) in [
        (format!("{}:5432", host("us-east-1")), 5432),
        (format!("{}:443", host("us-east-1")), 5432),
        (format!("{}.:6000", host("us-east-1").to_uppercase()), 6000),
    ] {
        let ep = Endpoint::parse(&pasted, None).unwrap();
        assert_eq!(ep.connect_host(), host("us-east-1"), "{pasted}");
        assert_eq!(ep.sign_host(), host("us-east-1"), "{pasted}");
        assert_eq!(ep.region(), "us-east-1", "{pasted}");
        assert_eq!(ep.port(), port, "{pasted}");
    }
    let ep = Endpoint::parse("LocalHost:5433", Some("us-east-1")).unwrap();
    assert_eq!(
        (ep.connect_host(), ep.sign_host(), ep.port()),
        ("localhost", "localhost", 5433)
    );
    let ep = Endpoint::parse("[::1]:5433", Some("us-east-1")).unwrap();
    assert_eq!((ep.connect_host(), ep.port()), ("::1", 5433));
    // A bare IPv6 address has no port: its last group is part of the address.
    let ep = Endpoint::parse("2001:db8::5432", Some("us-east-1")).unwrap();
    assert_eq!((ep.connect_host(), ep.port()), ("2001:db8::5432", 5432));
    // PrivateLink without DNS: the port belongs to the VPC endpoint, the token to the cluster.
    let ep = Endpoint::parse_with_cluster_id("proxy.internal:6432", Some("us-east-1"), Some(ID))
        .unwrap();
    assert_eq!((ep.connect_host(), ep.port()), ("proxy.internal", 6432));
    assert_eq!(ep.sign_host(), host("us-east-1"));
    // A sign host is a host alone (`:443` tolerated, as AWS's signers drop it).
    let custom = Endpoint::parse("localhost", Some("us-east-1")).unwrap();
    let ep = custom
        .clone()
        .with_sign_host(&format!("{}:443", host("us-east-1")))
        .unwrap();
    assert_eq!(ep.sign_host(), host("us-east-1"));
    let e = custom
        .with_sign_host(&format!("{}:5432", host("us-east-1")))
        .unwrap_err();
    assert!(e.to_string().contains("drop `:5432`"), "{e}");
}

#[test]
fn invalid_hosts_get_clear_errors() {
    let cases: &[(&str, &str)] = &[
        ("", "empty"),
        ("a..b", "empty label"),
        (".a", "empty label"),
        ("a b", "space"),
        ("localhost:0", "port"),
        ("localhost:65536", "port"),
        ("localhost:x", "port"),
        ("localhost:", "port"),
        ("[::1]5432", "port"),
        ("https://localhost", "URL"),
        ("[localhost]", "IPv6"),
        ("[::1", "]"),
        ("fe80::1%eth0", "zone"),
        ("1:2:3", "port"),
        ("/var/run/postgresql", "Unix"),
        ("h1,h2", "several"),
        ("-bad.example", "-"),
        ("bad-.example", "-"),
        ("ex*ample", "*"),
        ("bücher.example", "punycode"),
        ("10.0.0", "IPv4"),
        ("300.1.1.1", "IPv4"),
        ("dsql.us-east-1.on.aws", "cluster id"),
        (".", "no name"),
    ];
    for (h, needle) in cases {
        let msg = err(h, Some("us-east-1"));
        assert!(msg.contains(needle), "{h:?}: {msg}");
    }
    let long_label = "a".repeat(64);
    assert!(err(&long_label, Some("us-east-1")).contains("63"));
    let long_host = vec!["a".repeat(60); 5].join(".");
    assert!(err(&long_host, Some("us-east-1")).contains("253"));
}

#[test]
fn invalid_regions_get_clear_errors() {
    for r in ["", "us east 1", "us_east_1", "-us", "us--east"] {
        let msg = err("localhost", Some(r));
        assert!(msg.contains("region"), "{r:?}: {msg}");
    }
    // A malformed region inside a DSQL host.
    let msg = err(&format!("{ID}.dsql.us_east_1.on.aws"), None);
    assert!(msg.contains("region"), "{msg}");
}
