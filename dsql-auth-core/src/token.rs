//! SigV4 IAM authentication tokens for DSQL, byte-for-byte equal to botocore's.
//!
//! A token is a query-presigned `GET https://<host>/?Action=<action>` for service `dsql`, signed
//! header `host` only, empty payload, with the `https://` removed. Parameters come out in
//! botocore's order (`X-Amz-Security-Token` after `X-Amz-SignedHeaders`, signature last), so the
//! bytes equal boto3's `generate_db_connect[_admin]_auth_token` for the same inputs.
//!
//! [`sign`] derives the SigV4 signing key every time. [`Signer`] caches the per-day key, which
//! leaves one SHA-256 of the canonical request and one HMAC of the string to sign per token.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind};

/// The token lifetime AWS's SDKs and CLI use when none is given: 900 s (15 minutes); the same
/// value as [`crate::limits::DEFAULT_TOKEN_DURATION`].
pub const DEFAULT_EXPIRES_IN: Duration = crate::limits::DEFAULT_TOKEN_DURATION;
/// The longest token lifetime SigV4 presigning allows: 604,800 s (7 days); the same value as
/// [`crate::limits::MAX_TOKEN_DURATION`].
pub const MAX_EXPIRES_IN: Duration = crate::limits::MAX_TOKEN_DURATION;

const SERVICE: &str = "dsql";
/// SHA-256 of the empty payload (botocore's `EMPTY_SHA256_HASH`).
const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const SIGNATURE_PARAM: &str = "X-Amz-Signature";
const SECURITY_TOKEN_PARAM: &str = "X-Amz-Security-Token";

type HmacSha256 = Hmac<Sha256>;

/// The IAM action a token grants: `dsql:DbConnectAdmin` for the `admin` role, `dsql:DbConnect`
/// for every other role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// `DbConnect`: connect as a custom (non-admin) database role.
    DbConnect,
    /// `DbConnectAdmin`: connect as the `admin` role.
    DbConnectAdmin,
}

impl Action {
    /// The action for a database user: `DbConnectAdmin` exactly for `"admin"` (case-sensitive,
    /// as in every official connector), `DbConnect` otherwise.
    pub fn for_user(user: &str) -> Action {
        if user == "admin" {
            Action::DbConnectAdmin
        } else {
            Action::DbConnect
        }
    }

    /// The wire name: `"DbConnect"` or `"DbConnectAdmin"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::DbConnect => "DbConnect",
            Action::DbConnectAdmin => "DbConnectAdmin",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = Error;

    /// Parses `DbConnect` or `DbConnectAdmin` (ASCII case-insensitive).
    fn from_str(s: &str) -> Result<Self, Error> {
        if s.eq_ignore_ascii_case("DbConnect") {
            Ok(Action::DbConnect)
        } else if s.eq_ignore_ascii_case("DbConnectAdmin") {
            Ok(Action::DbConnectAdmin)
        } else {
            Err(Error::new(
                ErrorKind::InvalidSigningParams,
                format!(
                    "unknown DSQL action {s:?}: use DbConnect (custom roles) or DbConnectAdmin (the admin role)"
                ),
            ))
        }
    }
}

/// What a token is signed for: host, region, action and lifetime. Cheap to clone and hashable,
/// so it doubles as a cache key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningParams {
    // Hash of the other fields, computed once: cache lookups then hash one word and usually
    // reject a different key without comparing strings.
    hash: u64,
    host: String,
    region: String,
    action: Action,
    expires_in: Duration,
}

impl std::hash::Hash for SigningParams {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl fmt::Debug for SigningParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningParams")
            .field("host", &self.host)
            .field("region", &self.region)
            .field("action", &self.action)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

impl SigningParams {
    /// Signing parameters for `host` in `region`, with the default lifetime (900 s).
    ///
    /// The host is normalised the way botocore does it, so every AWS SDK agrees on the
    /// signature: lowercased, a trailing `:443` and a trailing dot removed, IPv6 in brackets.
    /// Other ports are kept (SigV4 signs them as part of the host, as botocore does); DSQL checks
    /// tokens for the bare host, which is what [`crate::Endpoint::sign_host`] gives. The region
    /// must be an AWS region name (e.g. `us-east-1`; lowercased).
    pub fn new(host: &str, region: &str, action: Action) -> Result<Self, Error> {
        Ok(Self {
            hash: 0,
            host: signing_host(host)?,
            region: signing_region(region)?,
            action,
            expires_in: DEFAULT_EXPIRES_IN,
        }
        .rehash())
    }

    fn rehash(mut self) -> Self {
        use std::hash::{Hash, Hasher};
        // SipHash with fixed keys: stable within the process, which is all a cache key needs.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&self.host, &self.region, self.action, self.expires_in).hash(&mut h);
        self.hash = h.finish();
        self
    }

    /// Sets the token lifetime: a whole number of seconds in 1..=604800.
    pub fn with_expires_in(mut self, expires_in: Duration) -> Result<Self, Error> {
        if expires_in.subsec_nanos() != 0 {
            return Err(Error::new(
                ErrorKind::InvalidSigningParams,
                format!(
                    "token lifetime {expires_in:?} is not a whole number of seconds: give whole seconds between 1 and 604800"
                ),
            ));
        }
        if expires_in.is_zero() || expires_in > MAX_EXPIRES_IN {
            return Err(Error::new(
                ErrorKind::InvalidSigningParams,
                format!(
                    "token lifetime of {} s is out of range: give between 1 and 604800 seconds (7 days); the default is 900",
                    expires_in.as_secs()
                ),
            ));
        }
        self.expires_in = expires_in;
        Ok(self.rehash())
    }

    /// The host the token is signed for, normalised (lowercase, no trailing dot, no `:443`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The AWS region the token is signed for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The IAM action the token grants.
    pub fn action(&self) -> Action {
        self.action
    }

    /// The token lifetime (whole seconds, 1..=604800).
    pub fn expires_in(&self) -> Duration {
        self.expires_in
    }
}

/// The host as SigV4 signs it, the way botocore does: lowercased, without a trailing dot or a
/// `:443`, IPv6 in brackets; another port is kept (botocore signs it).
fn signing_host(host: &str) -> Result<String, Error> {
    let parsed = crate::host::parse_host(host)
        .map_err(|msg| Error::new(ErrorKind::InvalidSigningParams, msg))?;
    let mut signed = parsed.authority_host();
    if let Some(port) = parsed.port.filter(|p| *p != 443) {
        signed.push(':');
        signed.push_str(&port.to_string());
    }
    Ok(signed)
}

fn signing_region(region: &str) -> Result<String, Error> {
    crate::host::normalize_region(region)
        .map_err(|msg| Error::new(ErrorKind::InvalidSigningParams, msg))
}

/// A signed IAM authentication token: the Postgres password for DSQL.
///
/// It is a secret: `Debug` and `Display` show the token with the signature and the session
/// token replaced by `<redacted>`. [`AuthToken::as_str`] is the only way to read it. Cloning is
/// cheap (a reference count).
#[derive(Clone)]
pub struct AuthToken {
    token: Arc<str>,
    signed_at: SystemTime,
    expires_at: SystemTime,
}

impl AuthToken {
    /// The full token, to be sent as the password. Never log it.
    pub fn as_str(&self) -> &str {
        &self.token
    }

    /// The signing time (`X-Amz-Date`, whole seconds).
    pub fn signed_at(&self) -> SystemTime {
        self.signed_at
    }

    /// When the token stops being accepted for new connections (`signed_at + X-Amz-Expires`).
    /// Open connections outlive their token.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    /// The token with secret parameter values replaced by `<redacted>`.
    fn fmt_redacted(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (head, query) = match self.token.split_once('?') {
            Some((h, q)) => (h, q),
            None => return f.write_str("<redacted>"),
        };
        f.write_str(head)?;
        f.write_str("?")?;
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                f.write_str("&")?;
            }
            match pair.split_once('=') {
                Some((k, _)) if k == SIGNATURE_PARAM || k == SECURITY_TOKEN_PARAM => {
                    f.write_str(k)?;
                    f.write_str("=<redacted>")?;
                }
                Some(_) => f.write_str(pair)?,
                // Not a key=value pair: nothing we produce, so show nothing of it.
                None => f.write_str("<redacted>")?,
            }
        }
        Ok(())
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken(")?;
        self.fmt_redacted(f)?;
        f.write_str(")")
    }
}

impl fmt::Display for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_redacted(f)
    }
}

/// Signs a token as of `at`, deriving the SigV4 signing key from scratch.
///
/// The result equals botocore's bytes for the same inputs. For repeated signing, a [`Signer`]
/// (or a [`crate::TokenProvider`], which also caches tokens) is faster.
pub fn sign(
    params: &SigningParams,
    creds: &Credentials,
    at: SystemTime,
) -> Result<AuthToken, Error> {
    let time = SigningTime::new(at)?;
    let key = aws_sigv4::sign::v4::generate_signing_key(
        creds.secret_access_key(),
        time.whole,
        &params.region,
        SERVICE,
    );
    let mac = keyed_mac(key.as_ref())?;
    sign_with(params, creds, &time, mac)
}

/// A signer that caches SigV4 signing keys (one per secret, day and region), so each token
/// costs one SHA-256 and one HMAC. Thread-safe; share it by reference or in an `Arc`.
#[derive(Default)]
pub struct Signer {
    keys: Mutex<Vec<CachedKey>>,
}

/// At most this many (secret, day, region) keys are kept.
const KEY_CACHE_CAPACITY: usize = 8;

struct CachedKey {
    // Kept to compare secrets without a second copy: `Credentials` is reference-counted.
    creds: Credentials,
    day: u64,
    region: String,
    // HMAC state already keyed with the signing key: cloning it skips the key schedule.
    mac: HmacSha256,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached = self.keys.lock().map(|k| k.len()).unwrap_or(0);
        f.debug_struct("Signer")
            .field("cached_keys", &cached)
            .finish()
    }
}

impl Signer {
    /// A signer with an empty key cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Signs a token as of `at`; same bytes as [`sign`], reusing the day's signing key.
    pub fn sign(
        &self,
        params: &SigningParams,
        creds: &Credentials,
        at: SystemTime,
    ) -> Result<AuthToken, Error> {
        let time = SigningTime::new(at)?;
        let mac = self.keyed_mac_for(creds, &time, &params.region)?;
        sign_with(params, creds, &time, mac)
    }

    fn keyed_mac_for(
        &self,
        creds: &Credentials,
        time: &SigningTime,
        region: &str,
    ) -> Result<HmacSha256, Error> {
        let same = |k: &CachedKey| {
            k.day == time.day
                && k.region == region
                && k.creds.secret_access_key() == creds.secret_access_key()
        };
        {
            let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(k) = keys.iter().find(|k| same(k)) {
                return Ok(k.mac.clone());
            }
        }
        let key = aws_sigv4::sign::v4::generate_signing_key(
            creds.secret_access_key(),
            time.whole,
            region,
            SERVICE,
        );
        let mac = keyed_mac(key.as_ref())?;
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        // Keys of other days are useless from now on; beyond that, evict the oldest.
        keys.retain(|k| k.day == time.day);
        if keys.len() >= KEY_CACHE_CAPACITY {
            keys.remove(0);
        }
        if !keys.iter().any(same) {
            keys.push(CachedKey {
                creds: creds.clone(),
                day: time.day,
                region: region.to_owned(),
                mac: mac.clone(),
            });
        }
        Ok(mac)
    }
}

fn keyed_mac(key: &[u8]) -> Result<HmacSha256, Error> {
    HmacSha256::new_from_slice(key)
        .map_err(|e| Error::new(ErrorKind::Signing, format!("cannot key HMAC-SHA256: {e}")))
}

/// The signing instant, truncated to whole seconds, with its SigV4 renderings.
struct SigningTime {
    whole: SystemTime,
    day: u64,
    /// `YYYYMMDDTHHMMSSZ`; its first 8 bytes are the date stamp.
    amz_date: [u8; 16],
}

impl SigningTime {
    fn new(at: SystemTime) -> Result<Self, Error> {
        let secs = at.duration_since(SystemTime::UNIX_EPOCH).map_err(|_| {
            Error::new(
                ErrorKind::InvalidSigningParams,
                "the signing time is before 1970: pass the current time",
            )
        })?;
        let secs = secs.as_secs();
        let day = secs / 86_400;
        let (y, m, d) = civil_from_days(day);
        if y > 9999 {
            return Err(Error::new(
                ErrorKind::InvalidSigningParams,
                "the signing time is after year 9999: pass the current time",
            ));
        }
        let sod = secs % 86_400;
        let mut amz_date = *b"00000000T000000Z";
        put_digits(&mut amz_date[0..4], y);
        put_digits(&mut amz_date[4..6], m);
        put_digits(&mut amz_date[6..8], d);
        put_digits(&mut amz_date[9..11], sod / 3600);
        put_digits(&mut amz_date[11..13], sod / 60 % 60);
        put_digits(&mut amz_date[13..15], sod % 60);
        Ok(Self {
            whole: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            day,
            amz_date,
        })
    }

    fn amz_date(&self) -> &str {
        // Only ASCII digits, 'T' and 'Z' are ever written.
        std::str::from_utf8(&self.amz_date).unwrap_or("")
    }

    fn date_stamp(&self) -> &str {
        self.amz_date().get(..8).unwrap_or("")
    }
}

fn put_digits(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Appends `value` SigV4-encoded: unreserved bytes (`A-Za-z0-9-_.~`) kept, everything else
/// `%XX` with uppercase hex.
fn push_encoded(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

fn encoded_len(value: &str) -> usize {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                1
            } else {
                3
            }
        })
        .sum()
}

fn sign_with(
    params: &SigningParams,
    creds: &Credentials,
    time: &SigningTime,
    mut mac: HmacSha256,
) -> Result<AuthToken, Error> {
    if creds.access_key_id().is_empty() {
        return Err(Error::new(
            ErrorKind::Credentials,
            "the AWS credentials have an empty access key id: check AWS_ACCESS_KEY_ID or the profile",
        ));
    }
    let secs_buf = itoa_buf(params.expires_in.as_secs());
    let expires = secs_buf.as_str();
    let session = creds.session_token();
    let amz_date = time.amz_date();
    let date = time.date_stamp();

    // The token in botocore's order is built once; the canonical (sorted) query is the same
    // bytes with the security token moved before X-Amz-SignedHeaders, fed to SHA-256 in pieces.
    let cap = params.host.len()
        + 200
        + encoded_len(creds.access_key_id())
        + params.region.len()
        + session.map_or(0, |s| 24 + encoded_len(s))
        + 64;
    let mut out = String::with_capacity(cap);
    out.push_str(&params.host);
    out.push_str("/?");
    let query_start = out.len();
    out.push_str("Action=");
    out.push_str(params.action.as_str());
    out.push_str("&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=");
    push_encoded(&mut out, creds.access_key_id());
    out.push_str("%2F");
    out.push_str(date);
    out.push_str("%2F");
    out.push_str(&params.region);
    out.push_str("%2Fdsql%2Faws4_request&X-Amz-Date=");
    out.push_str(amz_date);
    out.push_str("&X-Amz-Expires=");
    out.push_str(expires);
    let signed_headers_start = out.len();
    out.push_str("&X-Amz-SignedHeaders=host");
    let session_start = out.len();
    if let Some(token) = session {
        out.push_str("&X-Amz-Security-Token=");
        push_encoded(&mut out, token);
    }
    let session_end = out.len();

    let mut hasher = Sha256::new();
    hasher.update(b"GET\n/\n");
    hasher.update(&out.as_bytes()[query_start..signed_headers_start]);
    if session.is_some() {
        hasher.update(&out.as_bytes()[session_start..session_end]);
    }
    hasher.update(&out.as_bytes()[signed_headers_start..session_start]);
    hasher.update(b"\nhost:");
    hasher.update(params.host.as_bytes());
    hasher.update(b"\n\nhost\n");
    hasher.update(EMPTY_PAYLOAD_SHA256.as_bytes());
    let mut canonical_hex = [0u8; 64];
    hex::encode_to_slice(hasher.finalize(), &mut canonical_hex).map_err(|e| {
        Error::new(
            ErrorKind::Signing,
            format!("cannot hex-encode the canonical request hash: {e}"),
        )
    })?;

    mac.update(b"AWS4-HMAC-SHA256\n");
    mac.update(amz_date.as_bytes());
    mac.update(b"\n");
    mac.update(date.as_bytes());
    mac.update(b"/");
    mac.update(params.region.as_bytes());
    mac.update(b"/dsql/aws4_request\n");
    mac.update(&canonical_hex);
    let mut signature = [0u8; 64];
    hex::encode_to_slice(mac.finalize().into_bytes(), &mut signature).map_err(|e| {
        Error::new(
            ErrorKind::Signing,
            format!("cannot hex-encode the signature: {e}"),
        )
    })?;

    out.push_str("&X-Amz-Signature=");
    // Lowercase hex digits only.
    out.push_str(std::str::from_utf8(&signature).unwrap_or_default());
    Ok(AuthToken {
        token: Arc::from(out),
        signed_at: time.whole,
        expires_at: time.whole + params.expires_in,
    })
}

/// A decimal rendering of `v` on the stack.
struct ItoaBuf {
    buf: [u8; 20],
    start: usize,
}

impl ItoaBuf {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[self.start..]).unwrap_or("0")
    }
}

fn itoa_buf(mut v: u64) -> ItoaBuf {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    ItoaBuf { buf, start: i }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(session: Option<&str>) -> Credentials {
        Credentials::new("akid", "secret", session.map(str::to_owned), None, "test")
    }

    #[test]
    fn aws_sdk_dsql_known_answer() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_724_716_800);
        let p = SigningParams::new(
            "peccy.dsql.us-east-1.on.aws",
            "us-east-1",
            Action::DbConnect,
        )
        .unwrap()
        .with_expires_in(Duration::from_secs(450))
        .unwrap();
        let t = sign(&p, &creds(None), at).unwrap();
        assert!(
            t.as_str().ends_with(
                "X-Amz-Signature=f5f2ad764ca5df44045d4ab6ccecba0eef941b0007e5765885a0b6ed3702a3f8"
            ),
            "{}",
            t.as_str()
        );
    }

    #[test]
    fn dates_render() {
        let t =
            SigningTime::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_251_199)).unwrap();
        assert_eq!(t.amz_date(), "20240229T235959Z");
        let t = SigningTime::new(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(t.amz_date(), "19700101T000000Z");
        let t =
            SigningTime::new(SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400)).unwrap();
        assert_eq!(t.amz_date(), "20000229T000000Z");
    }

    #[test]
    fn cached_and_uncached_agree() {
        let signer = Signer::new();
        let p = SigningParams::new(
            "A.dsql.eu-west-1.on.aws.:443",
            "eu-west-1",
            Action::DbConnectAdmin,
        )
        .unwrap();
        let c = creds(Some("a/b+c=d"));
        for secs in [1_700_000_000u64, 1_700_000_001, 1_700_090_000] {
            let at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(
                signer.sign(&p, &c, at).unwrap().as_str(),
                sign(&p, &c, at).unwrap().as_str()
            );
        }
        let other = Credentials::new("akid", "other", None, None, "test");
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            signer.sign(&p, &other, at).unwrap().as_str(),
            sign(&p, &other, at).unwrap().as_str()
        );
    }

    #[test]
    fn host_normalised_and_checked() {
        let p = SigningParams::new(
            "Peccy.DSQL.us-east-1.on.aws.:443",
            "us-east-1",
            Action::DbConnect,
        )
        .unwrap();
        assert_eq!(p.host(), "peccy.dsql.us-east-1.on.aws");
        assert_eq!(
            SigningParams::new("h:5432", "us-east-1", Action::DbConnect)
                .unwrap()
                .host(),
            "h:5432"
        );
        assert_eq!(
            SigningParams::new("::1", "us-east-1", Action::DbConnect)
                .unwrap()
                .host(),
            "[::1]"
        );
        assert_eq!(
            SigningParams::new("2001:DB8::443", "us-east-1", Action::DbConnect)
                .unwrap()
                .host(),
            "[2001:db8::443]"
        );
        assert_eq!(
            SigningParams::new("[::1]:443", "us-east-1", Action::DbConnect)
                .unwrap()
                .host(),
            "[::1]"
        );
        for bad in ["", ":443", "https://x", "a b", "x/y", "u@h", "hé"] {
            let e = SigningParams::new(bad, "us-east-1", Action::DbConnect).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidSigningParams, "{bad}");
        }
        for bad in ["", "us east", "us_east_1", "-us-east-1"] {
            assert_eq!(
                SigningParams::new("h", bad, Action::DbConnect)
                    .unwrap_err()
                    .kind(),
                ErrorKind::InvalidSigningParams,
                "{bad}"
            );
        }
        // One region rule in the core: the same lowercasing as Endpoint and ConnectOptions.
        assert_eq!(
            SigningParams::new("h", "US-EAST-1", Action::DbConnect)
                .unwrap()
                .region(),
            "us-east-1"
        );
    }

    #[test]
    fn expiry_range() {
        let p = SigningParams::new("h", "us-east-1", Action::DbConnect).unwrap();
        assert_eq!(p.expires_in(), DEFAULT_EXPIRES_IN);
        for ok in [1, 900, 604_800] {
            assert_eq!(
                p.clone()
                    .with_expires_in(Duration::from_secs(ok))
                    .unwrap()
                    .expires_in()
                    .as_secs(),
                ok
            );
        }
        for bad in [
            Duration::ZERO,
            Duration::from_secs(604_801),
            Duration::from_millis(1500),
        ] {
            assert_eq!(
                p.clone().with_expires_in(bad).unwrap_err().kind(),
                ErrorKind::InvalidSigningParams
            );
        }
    }

    #[test]
    fn action_names() {
        assert_eq!(Action::for_user("admin"), Action::DbConnectAdmin);
        assert_eq!(Action::for_user("Admin"), Action::DbConnect);
        assert_eq!(Action::for_user("app"), Action::DbConnect);
        for a in [Action::DbConnect, Action::DbConnectAdmin] {
            assert_eq!(a.to_string().parse::<Action>().unwrap(), a);
        }
        assert!("Connect".parse::<Action>().is_err());
    }

    #[test]
    fn redacted() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_724_716_800);
        let p = SigningParams::new("h.example", "us-east-1", Action::DbConnect).unwrap();
        let t = sign(&p, &creds(Some("SESSIONSECRET")), at).unwrap();
        let sig = t.as_str().rsplit('=').next().unwrap().to_owned();
        for shown in [format!("{t}"), format!("{t:?}"), format!("{t:#?}")] {
            assert!(!shown.contains(&sig), "{shown}");
            assert!(!shown.contains("SESSIONSECRET"), "{shown}");
            assert!(shown.contains("X-Amz-Signature=<redacted>"), "{shown}");
            assert!(shown.contains("X-Amz-Security-Token=<redacted>"), "{shown}");
            assert!(shown.contains("h.example/?Action=DbConnect&"), "{shown}");
        }
    }

    #[test]
    fn times() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_724_716_800_750);
        let p = SigningParams::new("h", "us-east-1", Action::DbConnect).unwrap();
        let t = sign(&p, &creds(None), at).unwrap();
        assert_eq!(
            t.signed_at(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_724_716_800)
        );
        assert_eq!(t.expires_at(), t.signed_at() + DEFAULT_EXPIRES_IN);
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(
            sign(&p, &creds(None), before).unwrap_err().kind(),
            ErrorKind::InvalidSigningParams
        );
    }
}
