//! The Hyperdrive configuration objects as the API sends and receives them.

use crate::secret::Secret;

/// A configuration's origin. Every field is optional because the API answers with three shapes
/// (public host, Cloudflare Access, VPC service) and a PATCH sends only the fields it changes.
/// Responses never carry `password` or `access_client_secret`. Build one with struct-update
/// syntax from `Origin::default()`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Origin {
    /// `postgres`, `postgresql` or `mysql`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// The database host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The database port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The database name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The database user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Cloudflare Access client id (Access origins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_client_id: Option<String>,
    /// Cloudflare Access client secret (write-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_client_secret: Option<Secret>,
    /// Workers VPC service id (VPC origins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<String>,
    /// The password (write-only): for DSQL, an IAM token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
}

impl Origin {
    /// A public PostgreSQL origin with every network field and the password: what a create sends.
    pub fn postgres(
        host: impl Into<String>,
        port: u16,
        database: impl Into<String>,
        user: impl Into<String>,
        password: Secret,
    ) -> Self {
        Self {
            scheme: Some("postgres".to_owned()),
            host: Some(host.into()),
            port: Some(port),
            database: Some(database.into()),
            user: Some(user.into()),
            password: Some(password),
            ..Self::default()
        }
    }

    /// An origin holding only a password: the minimal rotation PATCH.
    pub fn password_only(password: Secret) -> Self {
        Self {
            password: Some(password),
            ..Self::default()
        }
    }
}

/// A Hyperdrive configuration as the API returns it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct HyperdriveConfig {
    /// The configuration id (used in URLs and Worker bindings).
    pub id: String,
    /// The configuration's name (unique by convention, not enforced by the API).
    #[serde(default)]
    pub name: String,
    /// Where Hyperdrive connects, without secrets.
    #[serde(default)]
    pub origin: Origin,
    /// Query caching settings, as sent by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caching: Option<serde_json::Value>,
    /// mTLS settings, as sent by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<serde_json::Value>,
    /// Upper bound on origin connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_connection_limit: Option<u32>,
    /// Creation time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_on: Option<String>,
    /// Last modification time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_on: Option<String>,
}

/// The body of a create (POST): a name and a complete origin with its password.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct NewConfig {
    /// The configuration's name.
    pub name: String,
    /// The complete origin, password included.
    pub origin: Origin,
}

impl NewConfig {
    /// A configuration named `name` for `origin`.
    pub fn new(name: impl Into<String>, origin: Origin) -> Self {
        Self {
            name: name.into(),
            origin,
        }
    }
}

/// The body of an edit (PATCH): only the fields set are changed. The network part of the origin
/// (scheme, host, port, database, user, Access or VPC ids) must be sent whole or not at all.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct ConfigEdit {
    /// A new name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Origin fields to change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

impl ConfigEdit {
    /// The rotation body: `{"origin":{"password":"..."}}` and nothing else.
    pub fn password(password: Secret) -> Self {
        Self {
            name: None,
            origin: Some(Origin::password_only(password)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_body_is_password_only() {
        let body = serde_json::to_value(ConfigEdit::password(Secret::new("tok"))).unwrap();
        assert_eq!(body, serde_json::json!({"origin": {"password": "tok"}}));
    }

    #[test]
    fn config_parses_with_missing_optional_fields() {
        let c: HyperdriveConfig = serde_json::from_value(serde_json::json!({"id": "abc"})).unwrap();
        assert_eq!(c.id, "abc");
        assert_eq!(c.origin, Origin::default());
    }

    #[test]
    fn debug_hides_passwords() {
        let o = Origin::postgres("h", 5432, "postgres", "admin", Secret::new("s3cr3t-token"));
        assert!(!format!("{o:?}").contains("s3cr3t"));
    }
}
