//! TLS policy for DSQL connections: which rustls [`ClientConfig`] each `sslmode` gets.
//! verify-full is the default.
//!
//! | `sslmode`     | chain checked against                      | host name checked |
//! |---------------|--------------------------------------------|-------------------|
//! | `verify-full` | `sslrootcert`, else Mozilla + system roots | yes (SNI host)    |
//! | `verify-ca`   | `sslrootcert`, else Mozilla + system roots | no                |
//! | `require`     | nothing: **insecure**, anyone on the path can read the token | no |
//!
//! `sslrootcert` follows libpq: when given, only the CAs in that PEM file are trusted
//! (`sslrootcert=system` means the Mozilla and system roots). With `sslnegotiation=direct` the
//! client offers ALPN `postgresql`, as PostgreSQL 17 servers require for direct TLS.
//!
//! # Crypto provider
//!
//! The crate feature `aws-lc-rs` (default) or `ring` chooses rustls' crypto provider, as sqlx
//! offers; with both, aws-lc-rs is used. With neither, the process-wide default provider is used
//! (`rustls::crypto::CryptoProvider::install_default`), and building a [`Config`](crate::Config)
//! fails with a configuration error saying so when none is installed.
//!
//! # Plumbing
//!
//! The stream is [`tokio_postgres_rustls::MakeRustlsConnect`], fed the [`ClientConfig`] built
//! here; it carries everything DSQL needs: SNI with the host dialled (DSQL requires it), the
//! config's ALPN list as given (`postgresql` for direct TLS), and direct TLS itself, which
//! tokio-postgres negotiates (`sslnegotiation=direct`) around any TLS connector. It also offers
//! `tls-server-end-point` channel binding, which DSQL never uses: the IAM token is a cleartext
//! password inside TLS, not SCRAM.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use dsql_auth_core::{SslMode, SslNegotiation};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::error::{Error, ErrorKind};

/// The ALPN protocol id PostgreSQL uses for direct TLS.
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// The rustls configuration for `mode` and `negotiation`, trusting only the CAs in `rootcert`
/// when given (libpq semantics), else the Mozilla roots plus the system's roots. Use it with
/// [`tokio_postgres_rustls::MakeRustlsConnect`] for plain tokio-postgres; [`Config`](crate::Config)
/// builds it once per configuration.
pub fn client_config(
    mode: SslMode,
    negotiation: SslNegotiation,
    rootcert: Option<&Path>,
) -> Result<ClientConfig, Error> {
    let provider = crypto_provider()?;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("the TLS provider cannot be set up: {e}"),
            )
        })?;
    let roots = match (mode, rootcert) {
        // Only the handshake signatures are checked; the roots are never consulted.
        (SslMode::Require, _) => Arc::new(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }),
        (_, Some(path)) if path != Path::new("system") => Arc::new(roots_from_pem_file(path)?),
        _ => default_roots(),
    };
    let mut config = if mode == SslMode::VerifyFull {
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!("the TLS trust roots cannot be used: {e}"),
                )
            })?;
        let relaxed = Relaxed {
            inner,
            check_chain: mode == SslMode::VerifyCa,
        };
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(relaxed))
            .with_no_client_auth()
    };
    if negotiation == SslNegotiation::Direct {
        config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    }
    Ok(config)
}

#[cfg(feature = "aws-lc-rs")]
fn crypto_provider() -> Result<Arc<CryptoProvider>, Error> {
    Ok(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

#[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
fn crypto_provider() -> Result<Arc<CryptoProvider>, Error> {
    Ok(Arc::new(rustls::crypto::ring::default_provider()))
}

#[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
fn crypto_provider() -> Result<Arc<CryptoProvider>, Error> {
    CryptoProvider::get_default().cloned().ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            "no rustls crypto provider: enable the `aws-lc-rs` (default) or `ring` feature of \
             dsql-tokio-postgres, or install one with rustls::crypto::CryptoProvider::install_default",
        )
    })
}

/// Mozilla's roots (webpki-roots) plus the operating system's, loaded once per process: loading
/// the system store reads files, which should not happen on every connection or config.
fn default_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let native = rustls_native_certs::load_native_certs();
            for err in &native.errors {
                tracing::debug!(error = %err, "some system CA certificates could not be loaded");
            }
            let (added, ignored) = roots.add_parsable_certificates(native.certs);
            tracing::debug!(
                added,
                ignored,
                total = roots.len(),
                "loaded TLS trust roots"
            );
            Arc::new(roots)
        })
        .clone()
}

fn roots_from_pem_file(path: &Path) -> Result<RootCertStore, Error> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| {
        Error::new(
            ErrorKind::Config,
            format!("cannot read sslrootcert file {shown}: {e}; give the path of a PEM file holding the CA certificate"),
        )
        .with_source(e)
    })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("sslrootcert file {shown} is not valid PEM: {e}"),
            )
        })?;
        roots.add(cert).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "sslrootcert file {shown} holds a certificate that cannot be a trust root: {e}"
                ),
            )
        })?;
    }
    if roots.is_empty() {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "sslrootcert file {shown} holds no certificate: it must contain at least one `BEGIN CERTIFICATE` block"
            ),
        ));
    }
    Ok(roots)
}

/// verify-ca and require: rustls' WebPKI verifier for the handshake signatures, and for the
/// certificate either its chain check minus the host name (verify-ca) or nothing (require:
/// insecure, a machine in the middle can read the IAM token; the session keys still belong to
/// whoever holds the presented certificate's key).
///
/// rustls checks the chain before the name (`verify_server_cert` in rustls 0.23), so a
/// name-mismatch error means the chain already passed.
#[derive(Debug)]
struct Relaxed {
    inner: Arc<WebPkiServerVerifier>,
    check_chain: bool,
}

impl ServerCertVerifier for Relaxed {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self.check_chain {
            return Ok(ServerCertVerified::assertion());
        }
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The rustls error behind a failed connect, if the TLS handshake failed: tokio-postgres wraps
/// the connector's `io::Error`, which wraps rustls' error.
pub(crate) fn rustls_error(err: &tokio_postgres::Error) -> Option<&rustls::Error> {
    let mut next = std::error::Error::source(err);
    while let Some(e) = next {
        // `io::Error::source` skips the error it wraps, so look inside with `get_ref`.
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn std::error::Error + 'static));
        if let Some(tls) = inner.unwrap_or(e).downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        next = e.source();
    }
    None
}

/// What to change when the TLS handshake fails with `err`.
pub(crate) fn advice(err: &rustls::Error) -> &'static str {
    match err {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "the server's certificate is not signed by a trusted CA: set sslrootcert to the CA's \
             PEM file (DSQL: Amazon Root CA 1; dsql-local prints its CA path)"
        }
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => {
            "the server's certificate does not name this host: connect with the cluster's DSQL host \
             name (use hostaddr to choose the address), or use sslmode=verify-ca"
        }
        rustls::Error::InvalidCertificate(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        ) => "the server's certificate is outside its validity period: check this machine's clock",
        rustls::Error::NoApplicationProtocol => {
            "the server does not accept ALPN `postgresql`: use sslnegotiation=postgres"
        }
        _ => "check sslmode, sslrootcert and sslnegotiation",
    }
}
