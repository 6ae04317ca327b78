//! The one host parser and the one region validator. [`Endpoint`](crate::Endpoint),
//! [`ConnectOptions`](crate::ConnectOptions) and [`SigningParams`](crate::SigningParams) all read
//! hosts and regions through here, so they accept and refuse the same strings.
//!
//! A host is a DNS name, an IPv4 address or an IPv6 address (bare, or in brackets), optionally
//! followed by `:<port>` as users paste it (`<cluster>.dsql.us-east-1.on.aws:5432`,
//! `...on.aws:443`, `[::1]:5432`). Hosts are case-insensitive and may end with one dot.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest DNS name (RFC 1035, without the trailing dot).
const MAX_HOST_LEN: usize = 253;
/// Longest DNS label (and region name).
pub(crate) const MAX_LABEL_LEN: usize = 63;

/// A parsed host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedHost<'a> {
    /// Normalised: lowercase, without a trailing dot, IPv6 without brackets.
    pub(crate) host: String,
    /// The host part as written (brackets and port removed): what a user's configuration keeps.
    pub(crate) as_written: &'a str,
    /// The port written after the host, if any.
    pub(crate) port: Option<u16>,
    /// An IPv4 or IPv6 literal.
    pub(crate) ip: bool,
}

impl ParsedHost<'_> {
    /// The host as it appears in a URL's authority (and so in a SigV4 `host` header): IPv6 in
    /// brackets.
    pub(crate) fn authority_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

/// A value as shown in an error message: escaped, and cut after 64 characters so a pasted
/// blob does not become a megabyte-long message.
pub(crate) fn shown(s: &str) -> String {
    const MAX: usize = 64;
    let mut out: String = s.chars().take(MAX).flat_map(char::escape_debug).collect();
    if s.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}

/// Parses and normalises a host with an optional `:port`. The error is a message that says
/// what to do; callers give it their error kind.
pub(crate) fn parse_host(raw: &str) -> Result<ParsedHost<'_>, String> {
    let shown = shown(raw);
    if raw.is_empty() {
        return Err("the host is empty: give a DSQL hostname, a cluster id or a host name".into());
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "host `{shown}` contains a space or control character: remove it"
        ));
    }
    if raw.contains("://") {
        return Err(format!(
            "host `{shown}` is a URL: give the host name alone, without a scheme or path"
        ));
    }
    if raw.starts_with('/') {
        return Err(format!(
            "host `{shown}` is a Unix-socket directory: DSQL is reached over TCP with TLS, give a hostname"
        ));
    }
    if raw.contains(',') {
        return Err(format!(
            "host `{shown}` lists several hosts: give exactly one"
        ));
    }
    if let Some(rest) = raw.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return Err(format!(
                "host `{shown}`: an IPv6 address in brackets must end with `]`"
            ));
        };
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(p) => Some(parse_port(p, &shown)?),
                None => {
                    return Err(format!(
                        "host `{shown}`: after `]` only `:<port>` may follow"
                    ));
                }
            },
        };
        return Ok(ParsedHost {
            host: ipv6(inner, &shown)?,
            as_written: inner,
            port,
            ip: true,
        });
    }
    let (name, port) = match raw.matches(':').count() {
        0 => (raw, None),
        1 => {
            let (name, port) = raw.split_once(':').unwrap_or((raw, ""));
            (name, Some(parse_port(port, &shown)?))
        }
        // Several colons: only an IPv6 address (which then cannot carry a port).
        _ => {
            return Ok(ParsedHost {
                host: ipv6(raw, &shown)?,
                as_written: raw,
                port: None,
                ip: true,
            });
        }
    };
    let (host, ip) = dns_name_or_ipv4(name, &shown)?;
    Ok(ParsedHost {
        host,
        as_written: name,
        port,
        ip,
    })
}

fn ipv6(s: &str, shown: &str) -> Result<String, String> {
    if s.contains('%') {
        return Err(format!(
            "host `{shown}`: IPv6 zone ids (`%eth0`) are not supported"
        ));
    }
    match s.parse::<Ipv6Addr>() {
        Ok(_) => Ok(s.to_ascii_lowercase()),
        Err(_) => Err(format!(
            "host `{shown}` is not a valid IPv6 address (or a host name with one `:<port>`); put \
             IPv6 addresses in brackets when they carry a port, e.g. [::1]:5432"
        )),
    }
}

fn parse_port(p: &str, shown: &str) -> Result<u16, String> {
    p.parse::<u16>()
        .ok()
        .filter(|n| *n != 0 && p.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            format!(
                "host `{shown}`: `{}` after `:` is not a port number: write host:port with a port \
                 from 1 to 65535, or put the port in port=...",
                self::shown(p)
            )
        })
}

/// Lowercase, without the trailing dot; true when it is an IPv4 address.
fn dns_name_or_ipv4(raw: &str, shown: &str) -> Result<(String, bool), String> {
    if raw.is_empty() {
        return Err(format!("host `{shown}` has no name before the port"));
    }
    if !raw.is_ascii() {
        return Err(format!(
            "host `{shown}` has non-ASCII characters: use its punycode (`xn--…`) form"
        ));
    }
    let lower = raw.to_ascii_lowercase();
    let host = lower.strip_suffix('.').unwrap_or(&lower);
    if host.is_empty() {
        return Err(format!("host `{shown}` has no name"));
    }
    if host.len() > MAX_HOST_LEN {
        return Err(format!(
            "host `{shown}` is longer than {MAX_HOST_LEN} characters"
        ));
    }
    for label in host.split('.') {
        if label.is_empty() {
            return Err(format!(
                "host `{shown}` has an empty label (`..` or a leading dot)"
            ));
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(format!(
                "host `{shown}` has a label longer than {MAX_LABEL_LEN} characters"
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "host `{shown}` contains `{}`: host names have letters, digits, `-`, `_` and dots",
                c.escape_debug()
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "host `{shown}` has a label that starts or ends with `-`"
            ));
        }
    }
    let last = host.rsplit('.').next().unwrap_or_default();
    if last.bytes().all(|b| b.is_ascii_digit()) {
        // A numeric last label is only valid as part of an IPv4 address.
        return match host.parse::<Ipv4Addr>() {
            Ok(_) => Ok((host.to_owned(), true)),
            Err(_) => Err(format!("host `{shown}` is not a valid IPv4 address")),
        };
    }
    Ok((host.to_owned(), false))
}

/// Lowercases and validates a region name such as `us-east-1`, `us-gov-west-1`, `cn-north-1`.
/// The error is a message that says what to do; callers give it their error kind.
pub(crate) fn normalize_region(region: &str) -> Result<String, String> {
    let r = region.to_ascii_lowercase();
    let ok = !r.is_empty()
        && r.len() <= MAX_LABEL_LEN
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !r.starts_with('-')
        && !r.ends_with('-')
        && !r.contains("--");
    if ok {
        Ok(r)
    } else {
        Err(format!(
            "region `{}` is not an AWS region name: expected something like `us-east-1` \
             (letters, digits and single hyphens)",
            shown(region)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> (String, Option<u16>, bool) {
        let p = parse_host(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
        (p.host, p.port, p.ip)
    }

    #[test]
    fn hosts_ports_and_ips() {
        let n = |h: &str, p: Option<u16>| (h.to_owned(), p, false);
        let ip = |h: &str, p: Option<u16>| (h.to_owned(), p, true);
        assert_eq!(
            ok("Peccy.DSQL.us-east-1.on.aws."),
            n("peccy.dsql.us-east-1.on.aws", None)
        );
        assert_eq!(ok("h.example:5432"), n("h.example", Some(5432)));
        assert_eq!(ok("H.example.:443"), n("h.example", Some(443)));
        assert_eq!(ok("10.0.0.1:6000"), ip("10.0.0.1", Some(6000)));
        assert_eq!(ok("::1"), ip("::1", None));
        assert_eq!(ok("2001:DB8::443"), ip("2001:db8::443", None));
        assert_eq!(ok("[::1]"), ip("::1", None));
        assert_eq!(ok("[::1]:5432"), ip("::1", Some(5432)));
        assert_eq!(parse_host("[::1]:443").unwrap().authority_host(), "[::1]");
        assert_eq!(
            parse_host("H.example:5432").unwrap().as_written,
            "H.example"
        );
        for bad in [
            "",
            ":443",
            "h:",
            "h:0",
            "h:65536",
            "h:+1",
            "h:x",
            "https://x",
            "a b",
            "x/y",
            "u@h",
            "hé",
            "[::1",
            "[::1]x",
            "[h]",
            "1:2:3",
            "fe80::1%eth0",
            "10.0.0",
            "a..b",
            "-a.b",
            "/tmp",
            "a,b",
        ] {
            assert!(parse_host(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn region_names() {
        assert_eq!(normalize_region("US-Gov-West-1").unwrap(), "us-gov-west-1");
        for bad in ["", "-a", "a-", "a--b", "us east", "us_east_1"] {
            assert!(normalize_region(bad).is_err(), "{bad:?}");
        }
    }
}
