//! The state file: for each endpoint, the configuration id, when its password was last written
//! and when that password stops working. With it, a run rotates only what is due.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{Error, ErrorKind, Result};
use crate::policy::RotationState;

/// Formats a time as RFC 3339 UTC (`2026-11-22T04:50:00Z`).
pub fn format_time(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "<unrepresentable time>".to_owned())
}

/// Parses an RFC 3339 time.
pub fn parse_time(s: &str) -> Option<SystemTime> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(SystemTime::from)
}

mod rfc3339 {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_time(*t))
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        parse_time(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not an RFC 3339 time")))
    }

    pub(super) mod option {
        use super::*;
        pub(crate) fn serialize<S: Serializer>(
            t: &Option<SystemTime>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&format_time(*t)),
                None => s.serialize_none(),
            }
        }
        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<SystemTime>, D::Error> {
            match Option::<String>::deserialize(d)? {
                None => Ok(None),
                Some(s) => parse_time(&s).map(Some).ok_or_else(|| {
                    serde::de::Error::custom(format!("{s:?} is not an RFC 3339 time"))
                }),
            }
        }
    }
}

/// What was last written to one endpoint's configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct EndpointState {
    /// The Hyperdrive configuration id written to.
    pub config_id: String,
    /// What the password was signed for, `user@host:port/database region expires_in`: when the
    /// endpoint's settings change, the recorded rotation no longer applies.
    pub fingerprint: String,
    /// When the password was written.
    #[serde(with = "rfc3339")]
    pub last_rotation: SystemTime,
    /// When the token expires.
    #[serde(with = "rfc3339")]
    pub token_expires_at: SystemTime,
    /// When the signing credentials expire (absent for long-term keys).
    #[serde(
        default,
        with = "rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub credentials_expire_at: Option<SystemTime>,
}

impl EndpointState {
    /// A record of a password written now.
    pub fn new(
        config_id: impl Into<String>,
        fingerprint: impl Into<String>,
        rotation: RotationState,
    ) -> Self {
        Self {
            config_id: config_id.into(),
            fingerprint: fingerprint.into(),
            last_rotation: rotation.last_rotation,
            token_expires_at: rotation.token_expires_at,
            credentials_expire_at: rotation.credentials_expire_at,
        }
    }

    /// The policy's view of this record.
    pub fn rotation(&self) -> RotationState {
        RotationState {
            last_rotation: self.last_rotation,
            token_expires_at: self.token_expires_at,
            credentials_expire_at: self.credentials_expire_at,
        }
    }
}

/// The whole state file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct StateFile {
    /// Format version (1).
    #[serde(default = "one")]
    pub version: u32,
    /// Per endpoint name.
    #[serde(default)]
    pub endpoints: BTreeMap<String, EndpointState>,
}

fn one() -> u32 {
    1
}

impl Default for StateFile {
    fn default() -> Self {
        Self {
            version: 1,
            endpoints: BTreeMap::new(),
        }
    }
}

impl StateFile {
    /// Reads the state file; a missing file is an empty state.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!("cannot read the state file {}: {e}", path.display()),
                ));
            }
        };
        serde_json::from_str(&text).map_err(|e| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "the state file {} is not valid ({e}); delete it to rotate everything once",
                    path.display()
                ),
            )
        })
    }

    /// Writes the state file atomically (a temporary file renamed over it).
    pub fn save(&self, path: &Path) -> Result<()> {
        let fail = |e: std::io::Error| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("cannot write the state file {}: {e}", path.display()),
            )
        };
        let text = serde_json::to_string_pretty(self).map_err(|e| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("cannot encode the state: {e}"),
            )
        })?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        std::fs::write(&tmp, text + "\n").map_err(fail)?;
        std::fs::rename(&tmp, path).map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn round_trips_through_json() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut s = StateFile::default();
        s.endpoints.insert(
            "a".into(),
            EndpointState::new(
                "id1",
                "fp",
                RotationState {
                    last_rotation: t0,
                    token_expires_at: t0 + Duration::from_secs(60),
                    credentials_expire_at: None,
                },
            ),
        );
        let text = serde_json::to_string(&s).unwrap();
        assert!(text.contains("2027-01-15T08:00:00Z"), "{text}");
        assert_eq!(serde_json::from_str::<StateFile>(&text).unwrap(), s);
    }
}
