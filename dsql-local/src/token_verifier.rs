//! Verifies a DSQL IAM token (a SigV4 query-presigned URL without its scheme).
//!
//! Written from the SigV4 specification with `hmac`/`sha2`, independently of the signer in
//! dsql-auth-core, so each checks the other. Every check maps to one [`RefusalReason`].

use crate::counters::RefusalReason;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

type HmacSha256 = Hmac<Sha256>;

/// The largest `X-Amz-Expires` DSQL accepts (7 days).
pub(crate) const MAX_EXPIRES_SECS: u64 = 604_800;
/// How far in the future `X-Amz-Date` may be (client clocks run ahead a little).
pub(crate) const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);
/// The most query parameters a token may have. DSQL tokens have 7 or 8; a password of thousands
/// is an attack on the verifier's time, refused before any per-parameter work.
pub(crate) const MAX_TOKEN_PARAMS: usize = 32;
/// SHA-256 of the empty payload: DSQL tokens sign a GET with no body.
const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The one set of credentials the gateway accepts. Debug never shows the secret or session token.
#[derive(Clone)]
pub(crate) struct AcceptedCredentials {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    pub(crate) session_token: Option<String>,
}

impl std::fmt::Debug for AcceptedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcceptedCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"** redacted **")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "** redacted **"),
            )
            .finish()
    }
}

/// What the verifier needs to know about the connection the token arrived on.
#[derive(Debug)]
pub(crate) struct Expectation<'a> {
    /// The startup message's `user`: `admin` requires `DbConnectAdmin`, any other role `DbConnect`.
    pub(crate) user: &'a str,
    /// The host the token must be signed for, already normalised (see [`normalize_host`]).
    pub(crate) host: &'a str,
    /// The cluster's region.
    pub(crate) region: &'a str,
    /// The time of verification.
    pub(crate) now: SystemTime,
}

/// The parsed parameters of a token; values are percent-decoded.
#[derive(Debug, Default)]
struct Parsed<'a> {
    host: &'a str,
    params: Vec<(String, String)>,
}

impl Parsed<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Lowercases a host and drops a trailing dot and a `:443` port, as the SDKs do before signing.
pub(crate) fn normalize_host(host: &str) -> String {
    let mut h = host.trim().to_ascii_lowercase();
    if let Some(stripped) = h.strip_suffix(":443") {
        h = stripped.to_owned();
    }
    if let Some(stripped) = h.strip_suffix('.') {
        h = stripped.to_owned();
    }
    h
}

fn parse(token: &str) -> Result<Parsed<'_>, RefusalReason> {
    // Some tools prepend the scheme; DSQL tokens have none, but the signature does not cover it.
    let token = token.strip_prefix("https://").unwrap_or(token);
    let (host, query) = token.split_once("/?").ok_or(RefusalReason::Malformed)?;
    if host.is_empty() || host.contains(['/', '?', '&', ' ']) {
        return Err(RefusalReason::Malformed);
    }
    // Linear in the password's length: count first, then one hash-set lookup per parameter.
    if query.split('&').count() > MAX_TOKEN_PARAMS {
        return Err(RefusalReason::Malformed);
    }
    let mut params: Vec<(String, String)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').ok_or(RefusalReason::Malformed)?;
        let k = decode(k)?;
        let v = decode(v)?;
        if k.is_empty() || !seen.insert(k.clone()) {
            return Err(RefusalReason::Malformed);
        }
        params.push((k, v));
    }
    Ok(Parsed { host, params })
}

fn decode(s: &str) -> Result<String, RefusalReason> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| RefusalReason::Malformed)
}

/// SigV4 URI encoding: every byte except the unreserved set `A-Z a-z 0-9 - _ . ~` becomes `%XX`.
fn sigv4_encode(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        }
    }
}

/// Seconds since the epoch of a `YYYYMMDD'T'HHMMSS'Z'` timestamp.
fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hour, minute, second) = (num(9..11)?, num(11..13)?, num(13..15)?);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if year < 1970 || !(1..=12).contains(&month) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    if day == 0 || day > days_in_month[month as usize - 1] {
        return None;
    }
    // Days from civil date (Howard Hinnant's algorithm), exact for the Gregorian calendar.
    let (y, m, d) = (i64::from(year), i64::from(month), i64::from(day));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second);
    u64::try_from(secs)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

fn hmac(key: &[u8], data: &[u8]) -> Result<HmacSha256, RefusalReason> {
    // HMAC takes keys of any length, so this never fails; mapped rather than unwrapped.
    let mut mac = HmacSha256::new_from_slice(key).map_err(|_| RefusalReason::Malformed)?;
    mac.update(data);
    Ok(mac)
}

/// Equality whose duration does not depend on where the inputs differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks `token` against the accepted credentials and the connection's expectations.
pub(crate) fn verify(
    token: &str,
    creds: &AcceptedCredentials,
    expect: &Expectation<'_>,
) -> Result<(), RefusalReason> {
    let parsed = parse(token)?;
    let get = |k: &str| parsed.get(k).ok_or(RefusalReason::Malformed);
    if get("X-Amz-Algorithm")? != "AWS4-HMAC-SHA256" {
        return Err(RefusalReason::Malformed);
    }
    let amz_date = get("X-Amz-Date")?;
    let signed_at = parse_amz_date(amz_date).ok_or(RefusalReason::Malformed)?;

    // Credential scope: <access key>/<yyyymmdd>/<region>/<service>/aws4_request.
    let credential = get("X-Amz-Credential")?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [
        access_key,
        scope_date,
        scope_region,
        scope_service,
        terminator,
    ] = scope[..]
    else {
        return Err(RefusalReason::Malformed);
    };
    if terminator != "aws4_request" || scope_date != &amz_date[..8] {
        return Err(RefusalReason::Malformed);
    }
    if scope_service != "dsql" {
        return Err(RefusalReason::WrongService);
    }
    if scope_region != expect.region {
        return Err(RefusalReason::WrongRegion);
    }
    if !ct_eq(access_key.as_bytes(), creds.access_key_id.as_bytes()) {
        return Err(RefusalReason::UnknownAccessKey);
    }
    match (parsed.get("X-Amz-Security-Token"), &creds.session_token) {
        (None, None) => {}
        (Some(got), Some(want)) if ct_eq(got.as_bytes(), want.as_bytes()) => {}
        _ => return Err(RefusalReason::WrongSessionToken),
    }
    if get("X-Amz-SignedHeaders")? != "host" {
        return Err(RefusalReason::Malformed);
    }
    let want_action = if expect.user == "admin" {
        "DbConnectAdmin"
    } else {
        "DbConnect"
    };
    if get("Action")? != want_action {
        return Err(RefusalReason::WrongAction);
    }
    if normalize_host(parsed.host) != expect.host {
        return Err(RefusalReason::HostMismatch);
    }
    let expires = get("X-Amz-Expires")?;
    if expires.is_empty() || !expires.bytes().all(|c| c.is_ascii_digit()) {
        return Err(RefusalReason::Malformed);
    }
    let expires: u64 = expires.parse().map_err(|_| RefusalReason::ExpiryTooLong)?;
    if expires == 0 {
        return Err(RefusalReason::Malformed);
    }
    if expires > MAX_EXPIRES_SECS {
        return Err(RefusalReason::ExpiryTooLong);
    }
    if signed_at > expect.now + MAX_CLOCK_SKEW {
        return Err(RefusalReason::FutureDated);
    }
    if signed_at + Duration::from_secs(expires) <= expect.now {
        return Err(RefusalReason::Expired);
    }

    let signature =
        hex::decode(get("X-Amz-Signature")?).map_err(|_| RefusalReason::BadSignature)?;
    let expected = string_to_sign_mac(
        &parsed,
        expect.host,
        creds,
        amz_date,
        scope_date,
        scope_region,
    )?;
    expected
        .verify_slice(&signature)
        .map_err(|_| RefusalReason::BadSignature)
}

/// Builds the canonical request and string to sign, and returns the keyed MAC over the latter.
/// The canonical request names `host`, the cluster's own lowercase name: the SDKs sign the
/// normalised host (lowercase, no `:443`) whatever spelling the token text keeps, as botocore
/// does for a mixed-case or `:443` host.
fn string_to_sign_mac(
    parsed: &Parsed<'_>,
    host: &str,
    creds: &AcceptedCredentials,
    amz_date: &str,
    date: &str,
    region: &str,
) -> Result<HmacSha256, RefusalReason> {
    let mut query: Vec<(String, String)> = parsed
        .params
        .iter()
        .filter(|(k, _)| k != "X-Amz-Signature")
        .map(|(k, v)| {
            let (mut ek, mut ev) = (String::new(), String::new());
            sigv4_encode(k, &mut ek);
            sigv4_encode(v, &mut ev);
            (ek, ev)
        })
        .collect();
    query.sort();
    let canonical_query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let canonical_request =
        format!("GET\n/\n{canonical_query}\nhost:{host}\n\nhost\n{EMPTY_PAYLOAD_SHA256}");
    let scope = format!("{date}/{region}/dsql/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let k_date = hmac(
        format!("AWS4{}", creds.secret_access_key).as_bytes(),
        date.as_bytes(),
    )?
    .finalize();
    let k_region = hmac(&k_date.into_bytes(), region.as_bytes())?.finalize();
    let k_service = hmac(&k_region.into_bytes(), b"dsql")?.finalize();
    let k_signing = hmac(&k_service.into_bytes(), b"aws4_request")?.finalize();
    hmac(&k_signing.into_bytes(), string_to_sign.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    // aws-sdk-dsql's published known answer (auth_token.rs tests): akid/secret, 1724716800,
    // peccy.dsql.us-east-1.on.aws, us-east-1, expires 450.
    const AT: u64 = 1_724_716_800;
    const HOST: &str = "peccy.dsql.us-east-1.on.aws";
    const SIG_CONNECT: &str = "f5f2ad764ca5df44045d4ab6ccecba0eef941b0007e5765885a0b6ed3702a3f8";
    const SIG_ADMIN: &str = "267cf8d04d84444f7a62d5bdb40c44bfc6cb13dd6c64fa7f772df6bbaa90fff1";

    fn creds() -> AcceptedCredentials {
        AcceptedCredentials {
            access_key_id: "akid".into(),
            secret_access_key: "secret".into(),
            session_token: None,
        }
    }

    fn token(action: &str, sig: &str) -> String {
        format!(
            "{HOST}/?Action={action}&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=akid%2F20240827%2Fus-east-1%2Fdsql%2Faws4_request&X-Amz-Date=20240827T000000Z&X-Amz-Expires=450&X-Amz-SignedHeaders=host&X-Amz-Signature={sig}"
        )
    }

    fn expect<'a>(user: &'a str, now_offset: i64) -> Expectation<'a> {
        let now = if now_offset >= 0 {
            UNIX_EPOCH + Duration::from_secs(AT + now_offset as u64)
        } else {
            UNIX_EPOCH + Duration::from_secs(AT - now_offset.unsigned_abs())
        };
        Expectation {
            user,
            host: HOST,
            region: "us-east-1",
            now,
        }
    }

    #[test]
    fn accepts_the_published_aws_sdk_vectors() {
        assert_eq!(
            verify(
                &token("DbConnect", SIG_CONNECT),
                &creds(),
                &expect("app", 10)
            ),
            Ok(())
        );
        assert_eq!(
            verify(
                &token("DbConnectAdmin", SIG_ADMIN),
                &creds(),
                &expect("admin", 10)
            ),
            Ok(())
        );
    }

    #[test]
    fn parameter_order_does_not_matter() {
        // @aws-sdk/dsql-signer sorts keys; aws-sdk-dsql puts the signature elsewhere.
        let t = format!(
            "{HOST}/?X-Amz-Signature={SIG_ADMIN}&X-Amz-SignedHeaders=host&X-Amz-Expires=450&X-Amz-Date=20240827T000000Z&X-Amz-Credential=akid%2F20240827%2Fus-east-1%2Fdsql%2Faws4_request&X-Amz-Algorithm=AWS4-HMAC-SHA256&Action=DbConnectAdmin"
        );
        assert_eq!(verify(&t, &creds(), &expect("admin", 0)), Ok(()));
    }

    #[test]
    fn each_check_has_its_reason() {
        let c = creds();
        let admin = token("DbConnectAdmin", SIG_ADMIN);
        let mut tampered = SIG_ADMIN.to_owned();
        tampered.replace_range(0..1, "3");
        assert_eq!(
            verify(&token("DbConnectAdmin", &tampered), &c, &expect("admin", 0)),
            Err(RefusalReason::BadSignature)
        );
        let wrong_secret = AcceptedCredentials {
            secret_access_key: "other".into(),
            ..creds()
        };
        assert_eq!(
            verify(&admin, &wrong_secret, &expect("admin", 0)),
            Err(RefusalReason::BadSignature)
        );
        let other_key = AcceptedCredentials {
            access_key_id: "AKIDOTHER".into(),
            ..creds()
        };
        assert_eq!(
            verify(&admin, &other_key, &expect("admin", 0)),
            Err(RefusalReason::UnknownAccessKey)
        );
        let with_session = AcceptedCredentials {
            session_token: Some("tok".into()),
            ..creds()
        };
        assert_eq!(
            verify(&admin, &with_session, &expect("admin", 0)),
            Err(RefusalReason::WrongSessionToken)
        );
        let mut e = expect("admin", 0);
        e.region = "eu-west-1";
        assert_eq!(verify(&admin, &c, &e), Err(RefusalReason::WrongRegion));
        assert_eq!(
            verify(&admin, &c, &expect("app", 0)),
            Err(RefusalReason::WrongAction)
        );
        let connect = token("DbConnect", SIG_CONNECT);
        assert_eq!(
            verify(&connect, &c, &expect("admin", 0)),
            Err(RefusalReason::WrongAction)
        );
        let mut e = expect("admin", 0);
        e.host = "other.dsql.us-east-1.on.aws";
        assert_eq!(verify(&admin, &c, &e), Err(RefusalReason::HostMismatch));
        assert_eq!(
            verify(&admin, &c, &expect("admin", 450)),
            Err(RefusalReason::Expired)
        );
        assert_eq!(verify(&admin, &c, &expect("admin", 449)), Ok(()));
        assert_eq!(verify(&admin, &c, &expect("admin", -300)), Ok(()));
        assert_eq!(
            verify(&admin, &c, &expect("admin", -301)),
            Err(RefusalReason::FutureDated)
        );
        let long = admin.replace("X-Amz-Expires=450", "X-Amz-Expires=604801");
        assert_eq!(
            verify(&long, &c, &expect("admin", 0)),
            Err(RefusalReason::ExpiryTooLong)
        );
        let service = admin.replace("%2Fdsql%2F", "%2Frds-db%2F");
        assert_eq!(
            verify(&service, &c, &expect("admin", 0)),
            Err(RefusalReason::WrongService)
        );
    }

    #[test]
    fn malformed_tokens_are_refused_for_their_reason() {
        use RefusalReason::*;
        let c = creds();
        let admin = token("DbConnectAdmin", SIG_ADMIN);
        for (bad, reason) in [
            (String::new(), Malformed),
            ("not a token".into(), Malformed),
            (format!("{HOST}/?"), Malformed),
            (format!("{HOST}/?Action"), Malformed),
            (
                admin.replace(
                    "X-Amz-Algorithm=AWS4-HMAC-SHA256",
                    "X-Amz-Algorithm=AWS4-HMAC-SHA1",
                ),
                Malformed,
            ),
            (
                admin.replace("X-Amz-Date=20240827T000000Z", "X-Amz-Date=20240827"),
                Malformed,
            ),
            // The date no longer matches the credential scope's.
            (
                admin.replace("X-Amz-Date=20240827T000000Z", "X-Amz-Date=20240228T000000Z"),
                Malformed,
            ),
            (
                admin.replace("X-Amz-Date=20240827T000000Z", "X-Amz-Date=20240230T000000Z"),
                Malformed,
            ),
            (
                admin.replace("%2Faws4_request", "%2Faws5_request"),
                Malformed,
            ),
            (
                admin.replace(
                    "X-Amz-SignedHeaders=host",
                    "X-Amz-SignedHeaders=host%3Bx-amz-date",
                ),
                Malformed,
            ),
            (
                admin.replace("X-Amz-Expires=450", "X-Amz-Expires=0"),
                Malformed,
            ),
            (
                admin.replace("X-Amz-Expires=450", "X-Amz-Expires=-1"),
                Malformed,
            ),
            // A duplicated parameter, even with another value.
            (format!("{admin}&Action=DbConnect"), Malformed),
            (admin.replace("%2F", "%ZZ"), Malformed),
            (
                admin.replace("&X-Amz-Signature", "&X-Amz-Signature%FF"),
                Malformed,
            ),
            (
                admin.replace("X-Amz-Expires=450", "X-Amz-Expires=99999999999999999999999"),
                ExpiryTooLong,
            ),
            (token("DbConnectAdmin", "zz"), BadSignature),
            (
                admin.replace(HOST, "other.dsql.us-east-1.on.aws"),
                HostMismatch,
            ),
        ] {
            assert_eq!(
                verify(&bad, &c, &expect("admin", 0)),
                Err(reason),
                "{bad:?}"
            );
        }
    }

    /// A password of many parameters is refused before any per-parameter work: the duplicate
    /// check was once quadratic (13,000 parameters took a second).
    #[test]
    fn too_many_parameters_are_malformed_whatever_they_are() {
        let admin = token("DbConnectAdmin", SIG_ADMIN);
        // Distinct, well-formed extra parameters: without the cap this reaches the signature check.
        let mut extra = admin.clone();
        for i in 0..MAX_TOKEN_PARAMS {
            extra.push_str(&format!("&X-Extra-{i}=v"));
        }
        assert_eq!(
            verify(&extra, &creds(), &expect("admin", 0)),
            Err(RefusalReason::Malformed)
        );
        // The worst case that fits in the gateway's 64 KiB message limit.
        let mut worst = format!("{HOST}/?");
        let mut i = 0;
        while worst.len() < 64 * 1024 - 16 {
            worst.push_str(&format!("a{i}=&"));
            i += 1;
        }
        worst.push_str("z=1");
        assert_eq!(
            verify(&worst, &creds(), &expect("admin", 0)),
            Err(RefusalReason::Malformed)
        );
        // Within the cap, extra parameters are signed like any other (and these are not).
        let few = format!("{admin}&X-Extra=v");
        assert_eq!(
            verify(&few, &creds(), &expect("admin", 0)),
            Err(RefusalReason::BadSignature)
        );
    }

    /// botocore signs the lowercase host without `:443` but keeps the host as given in the
    /// token's text; a server compares names case-insensitively, as DNS does.
    #[test]
    fn the_signed_host_is_compared_normalised() {
        assert_eq!(
            normalize_host("PECCY.dsql.us-east-1.on.aws.:443"),
            "peccy.dsql.us-east-1.on.aws"
        );
        assert_eq!(normalize_host("Peccy.Dsql.US-EAST-1.on.aws."), HOST);
        let good = token("DbConnectAdmin", SIG_ADMIN);
        for spelling in [
            "PECCY.DSQL.US-EAST-1.ON.AWS",
            "Peccy.dsql.us-east-1.on.aws:443",
            "peccy.dsql.us-east-1.on.aws.",
        ] {
            let respelled = good.replacen(HOST, spelling, 1);
            assert!(respelled.starts_with(spelling));
            assert_eq!(
                verify(&respelled, &creds(), &expect("admin", 0)),
                Ok(()),
                "{spelling}"
            );
        }
        // Another port or name is another host, whatever the signature.
        for other in [
            "peccy.dsql.us-east-1.on.aws:5432",
            "peccy2.dsql.us-east-1.on.aws",
        ] {
            assert_eq!(
                verify(
                    &good.replacen(HOST, other, 1),
                    &creds(),
                    &expect("admin", 0)
                ),
                Err(RefusalReason::HostMismatch),
                "{other}"
            );
        }
    }

    #[test]
    fn amz_dates_parse_exactly() {
        assert_eq!(
            parse_amz_date("20240827T000000Z"),
            Some(UNIX_EPOCH + Duration::from_secs(AT))
        );
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(UNIX_EPOCH));
        assert_eq!(
            parse_amz_date("20240229T235959Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1_709_251_199))
        );
        assert_eq!(
            parse_amz_date("20231231T235959Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1_704_067_199))
        );
        for bad in [
            "20230229T000000Z",
            "20241301T000000Z",
            "20240101T240000Z",
            "2024010lT000000Z",
            "20240101 000000Z",
            "+0240101T000000Z",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = AcceptedCredentials {
            access_key_id: "AKIDVISIBLE".into(),
            secret_access_key: "wJalrSECRETVALUE".into(),
            session_token: Some("SESSIONTOKEN".into()),
        };
        let s = format!("{c:?}");
        assert!(s.contains("AKIDVISIBLE"), "the key id is shown: {s}");
        assert!(!s.contains("SECRETVALUE"), "{s}");
        assert!(!s.contains("SESSIONTOKEN"), "{s}");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_passwords_never_panic(password in ".{0,300}") {
            let _ = verify(&password, &creds(), &expect("admin", 0));
        }

        #[test]
        fn mutated_tokens_are_refused(pos in 0usize..400, byte in proptest::num::u8::ANY) {
            let good = token("DbConnectAdmin", SIG_ADMIN);
            let mut bytes = good.clone().into_bytes();
            let pos = pos % bytes.len();
            proptest::prop_assume!(bytes[pos] != byte);
            bytes[pos] = byte;
            if let Ok(mutated) = String::from_utf8(bytes) {
                // Changing the host's case or a percent-escape's hex case keeps the meaning.
                let same_meaning = mutated.eq_ignore_ascii_case(&good)
                    && (pos < HOST.len() || good.as_bytes()[pos].is_ascii_hexdigit());
                if !same_meaning {
                    proptest::prop_assert!(verify(&mutated, &creds(), &expect("admin", 0)).is_err(), "{}", mutated);
                }
            }
        }
    }
}
