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
//! - A host may carry a port as users paste it: `<host>:5432` sets the port to connect to;
//!   `<host>:443` is the port of the HTTPS URL AWS signs (the AWS CLI and SDKs accept it and
//!   drop it), so it is dropped and never names the Postgres port. The token is always signed
//!   for the host without a port, as DSQL checks it.

use crate::error::{Error, ErrorKind};
use crate::host::{self, shown};

/// The default PostgreSQL port.
pub const DEFAULT_PORT: u16 = 5432;

/// The HTTPS port: in a host it belongs to the signing URL, not to the connection.
pub(crate) const HTTPS_PORT: u16 = 443;
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
    ///
    /// A port written after the host (`<host>:5432`) becomes the port to connect to; `:443` is
    /// dropped (see the module docs).
    pub fn parse_with_cluster_id(
        host: &str,
        region: Option<&str>,
        cluster_id: Option<&str>,
    ) -> Result<Endpoint, Error> {
        let (ep, port) = Self::parse_parts(host, region, cluster_id)?;
        Ok(match port {
            Some(p) => ep.with_port(p),
            None => ep,
        })
    }

    /// The endpoint (on the default port) and the connection port written in the host, if any
    /// (`:443` is not one).
    pub(crate) fn parse_parts(
        host: &str,
        region: Option<&str>,
        cluster_id: Option<&str>,
    ) -> Result<(Endpoint, Option<u16>), Error> {
        let (host, port, shape) = normalize_host(host)?;
        let port = port.filter(|p| *p != HTTPS_PORT);
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
        Ok((ep, port))
    }

    /// Keeps the host to connect to and signs for `sign_host` instead: a DSQL hostname
    /// (`<id>.dsql.<region>.on.aws`, FIPS and PrivateLink-DNS forms too) or a bare cluster id,
    /// which expands in this endpoint's region. Its region must match this endpoint's. A `:443`
    /// after it is dropped; any other port is an error (tokens are signed for the bare host).
    pub fn with_sign_host(mut self, sign_host: &str) -> Result<Self, Error> {
        let (host, port, shape) = normalize_host(sign_host)?;
        if let Some(p) = port.filter(|p| *p != HTTPS_PORT) {
            return Err(invalid(format!(
                "sign host `{}` has port {p}: tokens are signed for the host alone, so drop `:{p}`",
                shown(sign_host)
            )));
        }
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
    match normalize_host(host).ok()?.2 {
        HostShape::Dsql { region, .. } | HostShape::Vpce { region } => Some(region),
        _ => None,
    }
}

/// Lowercases and validates a region name such as `us-east-1` (the core's one region rule).
pub(crate) fn normalize_region(region: &str) -> Result<String, Error> {
    host::normalize_region(region).map_err(invalid)
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

/// Parses a host (with an optional `:port`) and says what it is.
fn normalize_host(raw: &str) -> Result<(String, Option<u16>, HostShape), Error> {
    let parsed = host::parse_host(raw).map_err(invalid)?;
    let port = parsed.port;
    let h = parsed.host;
    if parsed.ip {
        return Ok((h, port, HostShape::Ip));
    }
    let labels: Vec<&str> = h.split('.').collect();
    let n = labels.len();
    let shape = if n == 1 && is_cluster_id(&h) {
        HostShape::BareClusterId
    } else if n >= 4 && labels[n - 2..] == ["on", "aws"] && labels[n - 4].starts_with("dsql") {
        let region = normalize_region(labels[n - 3])?;
        if n == 4 {
            return Err(invalid(format!(
                "host `{}` has no cluster id: expected `<cluster-id>.{h}`",
                shown(raw)
            )));
        }
        let cluster = labels[n - 5].to_owned();
        HostShape::Dsql { region, cluster }
    } else if n >= 6
        && labels[n - 3..] == ["vpce", "amazonaws", "com"]
        && labels[n - 5].starts_with("dsql")
    {
        let region = normalize_region(labels[n - 4])?;
        HostShape::Vpce { region }
    } else {
        HostShape::Name
    };
    Ok((h, port, shape))
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
                .2,
            HostShape::Dsql {
                region: "us-east-1".into(),
                cluster: id.into()
            }
        );
        assert_eq!(normalize_host(id).unwrap().2, HostShape::BareClusterId);
        assert_eq!(normalize_host("localhost").unwrap().2, HostShape::Name);
        assert_eq!(
            normalize_host("[::1]:5432").unwrap(),
            ("::1".into(), Some(5432), HostShape::Ip)
        );
        assert_eq!(normalize_host("10.0.0.1").unwrap().2, HostShape::Ip);
        assert!(normalize_host("10.0.0").is_err());
        assert_eq!(
            normalize_host("vpce-0ab-xyz.dsql-fnh4.eu-west-1.vpce.amazonaws.com")
                .unwrap()
                .2,
            HostShape::Vpce {
                region: "eu-west-1".into()
            }
        );
    }
}
