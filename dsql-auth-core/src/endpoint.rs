//! Where to connect and what to sign for: DSQL hostnames, bare cluster ids, custom hosts.
//!
//! Rules (see `reference/dsql.md`):
//! - A DSQL hostname is `<cluster-id>.<service>.<region>.on.aws` where `<service>` starts with
//!   `dsql` (`dsql`, `dsql-fips`, a PrivateLink service id such as `dsql-fnh4`). The region is
//!   read from it, and the token is signed for it.
//! - A PrivateLink VPC endpoint host, `vpce-….<service>.<region>.vpce.amazonaws.com`, carries the
//!   region but not the cluster: the token must be signed for `<cluster-id>.dsql.<region>.on.aws`,
//!   so a cluster id is required ([`Endpoint::parse_with_cluster_id`]).
//! - A bare 26-character cluster id plus a region expands to `<id>.dsql.<region>.on.aws`.
//! - Anything else (`localhost`, IP literals, proxies) is a custom host: it is never rewritten
//!   into a DSQL hostname, and it needs an explicit region.
//! - Hosts are case-insensitive and may end with one dot. An explicit region that contradicts a
//!   DSQL hostname is an error naming both.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::error::{Error, ErrorKind};

/// The default PostgreSQL port.
pub const DEFAULT_PORT: u16 = 5432;

/// Longest DNS name (RFC 1035, without the trailing dot).
const MAX_HOST_LEN: usize = 253;
/// Longest DNS label.
const MAX_LABEL_LEN: usize = 63;
/// Length of a DSQL cluster id.
const CLUSTER_ID_LEN: usize = 26;

/// A DSQL endpoint: the host to connect to, the host the token is signed for, the region and
/// the port.
///
/// The two hosts differ for PrivateLink without private DNS: the client connects to a VPC
/// endpoint (or a proxy) and signs for the cluster's own hostname; the server then needs the
/// cluster id as the startup option `amzn-cluster-id` ([`Endpoint::needs_cluster_id_option`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    connect_host: String,
    sign_host: String,
    region: String,
    cluster_id: Option<String>,
    port: u16,
    dsql_host: bool,
}

/// What a (normalised) host string is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostShape {
    /// `<cluster>.<dsql…>.<region>.on.aws`.
    Dsql { region: String, cluster: String },
    /// `vpce-….<dsql…>.<region>.vpce.amazonaws.com`.
    Vpce { region: String },
    /// A bare 26-character cluster id.
    BareClusterId,
    /// An IPv4 or IPv6 literal.
    Ip,
    /// Any other hostname.
    Name,
}

fn invalid(msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::InvalidEndpoint, msg)
}

impl Endpoint {
    /// Parses a host (full DSQL hostname, bare cluster id or custom host) with an optional
    /// explicit region.
    ///
    /// A PrivateLink VPC endpoint host (`vpce-….vpce.amazonaws.com`) needs the cluster id as
    /// well: use [`Endpoint::parse_with_cluster_id`].
    pub fn parse(host: &str, region: Option<&str>) -> Result<Endpoint, Error> {
        Self::parse_with_cluster_id(host, region, None)
    }

    /// Parses a host with an optional explicit region and cluster id.
    ///
    /// With a cluster id, a custom host or a VPC endpoint host is connected to while the token is
    /// signed for `<cluster-id>.dsql.<region>.on.aws` (PrivateLink without DNS). With a DSQL
    /// hostname or a bare cluster id, the cluster id must agree with it.
    pub fn parse_with_cluster_id(
        host: &str,
        region: Option<&str>,
        cluster_id: Option<&str>,
    ) -> Result<Endpoint, Error> {
        let (host, shape) = normalize_host(host)?;
        let explicit = region.map(normalize_region).transpose()?;
        let cluster_id = cluster_id.map(normalize_cluster_id).transpose()?;
        let check_region = |from_host: &str| -> Result<(), Error> {
            match &explicit {
                Some(r) if r != from_host => Err(invalid(format!(
                    "region `{r}` contradicts host `{host}`, which is in region `{from_host}`: \
                     drop the region or use the host of a cluster in `{r}`"
                ))),
                _ => Ok(()),
            }
        };
        let ep = match shape {
            HostShape::Dsql {
                region: host_region,
                cluster,
            } => {
                check_region(&host_region)?;
                if let Some(id) = &cluster_id
                    && *id != cluster
                {
                    return Err(invalid(format!(
                        "cluster id `{id}` contradicts host `{host}`, which names cluster \
                         `{cluster}`: drop the cluster id or fix the host"
                    )));
                }
                Endpoint {
                    sign_host: host.clone(),
                    connect_host: host,
                    region: host_region,
                    cluster_id: Some(cluster),
                    port: DEFAULT_PORT,
                    dsql_host: true,
                }
            }
            HostShape::Vpce {
                region: host_region,
            } => {
                check_region(&host_region)?;
                let Some(id) = cluster_id else {
                    return Err(invalid(format!(
                        "`{host}` is a PrivateLink VPC endpoint: the token must be signed for the \
                         cluster's own hostname, so give the cluster id (cluster_id=<26-character \
                         id> in a connection string, or Endpoint::parse_with_cluster_id)"
                    )));
                };
                Endpoint {
                    connect_host: host,
                    sign_host: public_host(&id, &host_region),
                    region: host_region,
                    cluster_id: Some(id),
                    port: DEFAULT_PORT,
                    dsql_host: true,
                }
            }
            HostShape::BareClusterId => {
                let Some(region) = explicit else {
                    return Err(invalid(format!(
                        "`{host}` is a bare cluster id: pass region=... (or set AWS_REGION) so it \
                         expands to `{host}.dsql.<region>.on.aws`"
                    )));
                };
                if let Some(id) = &cluster_id
                    && *id != host
                {
                    return Err(invalid(format!(
                        "cluster id `{id}` contradicts host `{host}`: they must name the same \
                         cluster"
                    )));
                }
                let full = public_host(&host, &region);
                Endpoint {
                    connect_host: full.clone(),
                    sign_host: full,
                    region,
                    cluster_id: Some(host),
                    port: DEFAULT_PORT,
                    dsql_host: true,
                }
            }
            HostShape::Ip | HostShape::Name => {
                let Some(region) = explicit else {
                    return Err(invalid(format!(
                        "`{host}` is not a DSQL hostname, so the region cannot be read from it: \
                         pass region=... (or set AWS_REGION); custom hosts are never rewritten"
                    )));
                };
                match cluster_id {
                    Some(id) => Endpoint {
                        connect_host: host,
                        sign_host: public_host(&id, &region),
                        region,
                        cluster_id: Some(id),
                        port: DEFAULT_PORT,
                        dsql_host: false,
                    },
                    None => Endpoint {
                        sign_host: host.clone(),
                        connect_host: host,
                        region,
                        cluster_id: None,
                        port: DEFAULT_PORT,
                        dsql_host: false,
                    },
                }
            }
        };
        Ok(ep)
    }

    /// Keeps the host to connect to and signs for `sign_host` instead: a DSQL hostname
    /// (`<id>.dsql.<region>.on.aws`, FIPS and PrivateLink-DNS forms too) or a bare cluster id,
    /// which expands in this endpoint's region. Its region must match this endpoint's.
    pub fn with_sign_host(mut self, sign_host: &str) -> Result<Self, Error> {
        let (host, shape) = normalize_host(sign_host)?;
        let (sign_host, cluster) = match shape {
            HostShape::Dsql { region, cluster } => {
                if region != self.region {
                    return Err(invalid(format!(
                        "sign host `{host}` is in region `{region}` but the endpoint is in region \
                         `{}`: sign for a host in the same region",
                        self.region
                    )));
                }
                (host, cluster)
            }
            HostShape::BareClusterId => (public_host(&host, &self.region), host),
            HostShape::Vpce { .. } | HostShape::Ip | HostShape::Name => {
                return Err(invalid(format!(
                    "sign host `{host}` is not a DSQL cluster hostname: sign for \
                     `<cluster-id>.dsql.<region>.on.aws` (or give the bare cluster id)"
                )));
            }
        };
        self.sign_host = sign_host;
        self.cluster_id = Some(cluster);
        Ok(self)
    }

    /// Sets the port to connect to (default 5432).
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The host to open the TCP connection to (and to send as TLS SNI). Lowercase, without a
    /// trailing dot or IPv6 brackets.
    pub fn connect_host(&self) -> &str {
        &self.connect_host
    }

    /// The host the IAM token is signed for.
    pub fn sign_host(&self) -> &str {
        &self.sign_host
    }

    /// The AWS region the token is signed for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The cluster id, when known: from a DSQL hostname, a bare id, or given explicitly.
    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// True when the connect host is a DSQL hostname (public, FIPS, PrivateLink DNS or a
    /// PrivateLink VPC endpoint), false for custom hosts.
    pub fn is_dsql_host(&self) -> bool {
        self.dsql_host
    }

    /// True when the host connected to is not the host signed for, so the server cannot tell the
    /// cluster from SNI: send the startup option `-c amzn-cluster-id=<cluster_id>`.
    pub fn needs_cluster_id_option(&self) -> bool {
        self.connect_host != self.sign_host
    }

    /// The startup option that names the cluster when [`needs_cluster_id_option`] is true:
    /// `-c amzn-cluster-id=<cluster_id>`; `None` otherwise.
    ///
    /// [`needs_cluster_id_option`]: Endpoint::needs_cluster_id_option
    pub fn cluster_id_option(&self) -> Option<String> {
        match &self.cluster_id {
            Some(id) if self.needs_cluster_id_option() => Some(format!("-c amzn-cluster-id={id}")),
            _ => None,
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

/// `<id>.dsql.<region>.on.aws`.
fn public_host(cluster_id: &str, region: &str) -> String {
    format!("{cluster_id}.dsql.{region}.on.aws")
}

/// Checks a host's syntax without needing a region: what a connection-string parser can check
/// before all values are known.
pub(crate) fn check_host(host: &str) -> Result<(), Error> {
    normalize_host(host).map(|_| ())
}

/// The region a host carries (DSQL hostname or VPC endpoint host), if any. Invalid hosts carry
/// none.
pub(crate) fn region_in_host(host: &str) -> Option<String> {
    match normalize_host(host).ok()?.1 {
        HostShape::Dsql { region, .. } | HostShape::Vpce { region } => Some(region),
        _ => None,
    }
}

/// Lowercases and validates a region name such as `us-east-1`, `us-gov-west-1`, `cn-north-1`.
pub(crate) fn normalize_region(region: &str) -> Result<String, Error> {
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
        Err(invalid(format!(
            "region `{}` is not an AWS region name: expected something like `us-east-1` \
             (letters, digits and single hyphens)",
            shown(region)
        )))
    }
}

/// Lowercases and validates a cluster id: 26 letters and digits.
pub(crate) fn normalize_cluster_id(id: &str) -> Result<String, Error> {
    let lower = id.to_ascii_lowercase();
    if is_cluster_id(&lower) {
        Ok(lower)
    } else {
        Err(invalid(format!(
            "cluster id `{}` is not a DSQL cluster id: expected {CLUSTER_ID_LEN} letters and \
             digits, the first label of `<cluster-id>.dsql.<region>.on.aws`",
            shown(id)
        )))
    }
}

fn is_cluster_id(s: &str) -> bool {
    s.len() == CLUSTER_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Normalises a host (lowercase, IPv6 brackets and one trailing dot removed), validates it and
/// says what it is.
fn normalize_host(raw: &str) -> Result<(String, HostShape), Error> {
    let shown = shown(raw);
    if raw.is_empty() {
        return Err(invalid(
            "the host is empty: give a DSQL hostname, a cluster id or a host name",
        ));
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(format!(
            "host `{shown}` contains a space or control character: remove it"
        )));
    }
    if raw.starts_with('/') {
        return Err(invalid(format!(
            "host `{shown}` is a Unix-socket directory: DSQL is reached over TCP with TLS, give a hostname"
        )));
    }
    if raw.contains(',') {
        return Err(invalid(format!(
            "host `{shown}` lists several hosts: give exactly one"
        )));
    }
    // IPv6 literal, with or without brackets.
    let unbracketed = match raw.strip_prefix('[') {
        Some(rest) => match rest.strip_suffix(']') {
            Some(inner) => Some(inner),
            None => {
                return Err(invalid(format!(
                    "host `{shown}`: an IPv6 address in brackets must end with `]`; put the port in port=..."
                )));
            }
        },
        None => None,
    };
    let candidate = unbracketed.unwrap_or(raw);
    if candidate.contains(':') {
        if candidate.parse::<Ipv6Addr>().is_ok() {
            return Ok((candidate.to_ascii_lowercase(), HostShape::Ip));
        }
        if candidate.contains('%') {
            return Err(invalid(format!(
                "host `{shown}`: IPv6 zone ids (`%eth0`) are not supported"
            )));
        }
        if unbracketed.is_some() {
            return Err(invalid(format!(
                "host `{shown}` is not a valid IPv6 address"
            )));
        }
        return Err(invalid(format!(
            "host `{shown}` contains `:`: put the port in port=... (or after the host in a URL), and \
             IPv6 addresses in brackets"
        )));
    }
    if unbracketed.is_some() {
        return Err(invalid(format!(
            "host `{shown}`: only IPv6 addresses go in brackets"
        )));
    }
    if !raw.is_ascii() {
        return Err(invalid(format!(
            "host `{shown}` has non-ASCII characters: use its punycode (`xn--…`) form"
        )));
    }
    let lower = raw.to_ascii_lowercase();
    let host = lower.strip_suffix('.').unwrap_or(&lower);
    if host.is_empty() {
        return Err(invalid(format!("host `{shown}` has no name")));
    }
    if host.len() > MAX_HOST_LEN {
        return Err(invalid(format!(
            "host `{shown}` is longer than {MAX_HOST_LEN} characters"
        )));
    }
    let labels: Vec<&str> = host.split('.').collect();
    for label in &labels {
        if label.is_empty() {
            return Err(invalid(format!(
                "host `{shown}` has an empty label (`..` or a leading dot)"
            )));
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(invalid(format!(
                "host `{shown}` has a label longer than {MAX_LABEL_LEN} characters"
            )));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(invalid(format!(
                "host `{shown}` contains `{}`: host names have letters, digits, `-`, `_` and dots",
                c.escape_debug()
            )));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid(format!(
                "host `{shown}` has a label that starts or ends with `-`"
            )));
        }
    }
    let host = host.to_owned();
    let last = labels.last().copied().unwrap_or_default();
    if last.bytes().all(|b| b.is_ascii_digit()) {
        // A numeric last label is only valid as part of an IPv4 address.
        return match host.parse::<Ipv4Addr>() {
            Ok(_) => Ok((host, HostShape::Ip)),
            Err(_) => Err(invalid(format!(
                "host `{shown}` is not a valid IPv4 address"
            ))),
        };
    }
    let n = labels.len();
    if n == 1 && is_cluster_id(&host) {
        return Ok((host, HostShape::BareClusterId));
    }
    if n >= 4 && labels[n - 2..] == ["on", "aws"] && labels[n - 4].starts_with("dsql") {
        let region = normalize_region(labels[n - 3])?;
        if n == 4 {
            return Err(invalid(format!(
                "host `{shown}` has no cluster id: expected `<cluster-id>.{host}`"
            )));
        }
        let cluster = labels[n - 5].to_owned();
        return Ok((host, HostShape::Dsql { region, cluster }));
    }
    if n >= 6
        && labels[n - 3..] == ["vpce", "amazonaws", "com"]
        && labels[n - 5].starts_with("dsql")
    {
        let region = normalize_region(labels[n - 4])?;
        return Ok((host, HostShape::Vpce { region }));
    }
    Ok((host, HostShape::Name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let id = "abcdefghijklmnopqrstuvwxyz";
        assert_eq!(
            normalize_host(&format!("{id}.dsql.us-east-1.on.aws"))
                .unwrap()
                .1,
            HostShape::Dsql {
                region: "us-east-1".into(),
                cluster: id.into()
            }
        );
        assert_eq!(normalize_host(id).unwrap().1, HostShape::BareClusterId);
        assert_eq!(normalize_host("localhost").unwrap().1, HostShape::Name);
        assert_eq!(
            normalize_host("[::1]").unwrap(),
            ("::1".into(), HostShape::Ip)
        );
        assert_eq!(normalize_host("10.0.0.1").unwrap().1, HostShape::Ip);
        assert!(normalize_host("10.0.0").is_err());
        assert_eq!(
            normalize_host("vpce-0ab-xyz.dsql-fnh4.eu-west-1.vpce.amazonaws.com")
                .unwrap()
                .1,
            HostShape::Vpce {
                region: "eu-west-1".into()
            }
        );
    }

    #[test]
    fn region_names() {
        assert_eq!(normalize_region("US-Gov-West-1").unwrap(), "us-gov-west-1");
        for bad in ["", "-a", "a-", "a--b", "us east", "us_east_1"] {
            assert!(normalize_region(bad).is_err(), "{bad:?}");
        }
    }
}
