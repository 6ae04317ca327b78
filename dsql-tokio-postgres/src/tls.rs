//! TLS for DSQL connections: rustls with the aws-lc-rs provider, verify-full by default.
//!
//! | `sslmode`     | chain checked against                      | host name checked |
//! |---------------|--------------------------------------------|-------------------|
//! | `verify-full` | `sslrootcert`, else Mozilla + system roots | yes (SNI host)    |
//! | `verify-ca`   | `sslrootcert`, else Mozilla + system roots | no                |
//! | `require`     | nothing: **insecure**, anyone on the path can read the token | no |
//!
//! `sslrootcert` follows libpq: when given, only the CAs in that PEM file are trusted
//! (`sslrootcert=system` means the Mozilla and system roots). SNI always carries the host the
//! connection was opened for, which DSQL requires. With `sslnegotiation=direct` the client
//! offers ALPN `postgresql`, as PostgreSQL 17 servers require for direct TLS.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use dsql_auth_core::{SslMode, SslNegotiation};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

use crate::error::{Error, ErrorKind};

/// The ALPN protocol id PostgreSQL uses for direct TLS.
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// A [`MakeTlsConnect`] for tokio-postgres backed by rustls, configured for DSQL.
///
/// Build it once and clone it: the trust roots are loaded when it is built, not per connection.
/// Usable with plain tokio-postgres too: `tokio_postgres_config.connect(tls.clone())`.
#[derive(Clone)]
pub struct MakeDsqlTls {
    config: Arc<ClientConfig>,
    mode: SslMode,
}

impl fmt::Debug for MakeDsqlTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MakeDsqlTls")
            .field("mode", &self.mode)
            .field(
                "alpn",
                &self
                    .config
                    .alpn_protocols
                    .iter()
                    .map(|p| String::from_utf8_lossy(p))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl MakeDsqlTls {
    /// Builds the TLS configuration for `mode` and `negotiation`, trusting only the CAs in
    /// `rootcert` when given (libpq semantics), else the Mozilla roots plus the system's roots.
    pub fn new(
        mode: SslMode,
        negotiation: SslNegotiation,
        rootcert: Option<&Path>,
    ) -> Result<Self, Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| {
                Error::new(
                    ErrorKind::Tls,
                    format!("the TLS provider cannot be set up: {e}"),
                )
            })?;

        let mut config = match mode {
            SslMode::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification {
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth(),
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let roots = match rootcert {
                    Some(path) if path == Path::new("system") => default_roots(),
                    Some(path) => Arc::new(roots_from_pem_file(path)?),
                    None => default_roots(),
                };
                if mode == SslMode::VerifyFull {
                    builder.with_root_certificates(roots).with_no_client_auth()
                } else {
                    let inner =
                        WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                            .build()
                            .map_err(|e| {
                                Error::new(
                                    ErrorKind::Config,
                                    format!("the TLS trust roots cannot be used: {e}"),
                                )
                            })?;
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(ChainOnly { inner }))
                        .with_no_client_auth()
                }
            }
        };
        if negotiation == SslNegotiation::Direct {
            config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
        }
        Ok(Self {
            config: Arc::new(config),
            mode,
        })
    }

    /// Wraps a rustls configuration of your own (other roots, client certificates, a different
    /// provider). Set `alpn_protocols` to [`ALPN_POSTGRESQL`] yourself for direct TLS.
    pub fn from_client_config(config: Arc<ClientConfig>) -> Self {
        Self {
            config,
            mode: SslMode::VerifyFull,
        }
    }

    /// The rustls configuration in use.
    pub fn client_config(&self) -> &Arc<ClientConfig> {
        &self.config
    }
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

/// verify-ca: the full chain check of rustls' WebPKI verifier, minus the host name.
///
/// rustls checks the chain before the name (`verify_server_cert` in rustls 0.23), so a
/// name-mismatch error means the chain already passed.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
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

/// `sslmode=require`: encryption without authentication of the server. Insecure: a machine in
/// the middle can read the IAM token. The handshake signatures are still checked, so the
/// session keys belong to whoever holds the presented certificate's key.
#[derive(Debug)]
struct NoVerification {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A TLS failure, with advice on what to change. (A type of its own so [`connect`](crate::connect)
/// can tell a TLS failure from a network one inside tokio-postgres' error.)
#[derive(Debug)]
pub struct TlsError {
    message: String,
    source: io::Error,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl TlsError {
    fn new(host: &str, source: io::Error) -> Self {
        let rustls_err = source
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>());
        let advice = match rustls_err {
            Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
                "the server's certificate is not signed by a trusted CA: set sslrootcert to the \
                 CA's PEM file (DSQL: Amazon Root CA 1; dsql-local prints its CA path)"
            }
            Some(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {
                "the server's certificate does not name this host: connect with the cluster's \
                 DSQL host name (use hostaddr to choose the address), or use sslmode=verify-ca"
            }
            Some(rustls::Error::InvalidCertificate(
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. },
            )) => {
                "the server's certificate is outside its validity period: check this machine's clock"
            }
            Some(rustls::Error::NoApplicationProtocol) => {
                "the server does not accept ALPN `postgresql`: use sslnegotiation=postgres"
            }
            Some(_) => "check sslmode, sslrootcert and sslnegotiation",
            None => "the connection failed during the TLS handshake",
        };
        Self {
            message: format!("TLS handshake with {host} failed: {source}; {advice}"),
            source,
        }
    }
}

impl<S> MakeTlsConnect<S> for MakeDsqlTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type TlsConnect = DsqlTlsConnect;
    type Error = TlsError;

    fn make_tls_connect(&mut self, hostname: &str) -> Result<Self::TlsConnect, Self::Error> {
        let server_name = ServerName::try_from(hostname.to_owned()).map_err(|e| TlsError {
            message: format!("{hostname:?} cannot be used as a TLS server name: give a DNS name or IP address as host"),
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
        Ok(DsqlTlsConnect {
            config: self.config.clone(),
            server_name,
        })
    }
}

/// One pending TLS handshake (an implementation detail of [`MakeDsqlTls`]).
#[derive(Debug)]
pub struct DsqlTlsConnect {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl<S> TlsConnect<S> for DsqlTlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type Error = TlsError;
    type Future = Pin<Box<dyn Future<Output = Result<TlsStream<S>, TlsError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let host = self.server_name.to_str().into_owned();
            let connector = tokio_rustls::TlsConnector::from(self.config);
            match connector.connect(self.server_name, stream).await {
                Ok(tls) => Ok(TlsStream(tls)),
                Err(e) => Err(TlsError::new(&host, e)),
            }
        })
    }
}

/// An established TLS stream to the server.
pub struct TlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S> fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (_, session) = self.0.get_ref();
        f.debug_struct("TlsStream")
            .field("protocol_version", &session.protocol_version())
            .field(
                "alpn",
                &session.alpn_protocol().map(String::from_utf8_lossy),
            )
            .finish_non_exhaustive()
    }
}

impl<S> TlsStream<S> {
    /// The ALPN protocol the server agreed to (`postgresql` with direct TLS), if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.0.get_ref().1.alpn_protocol()
    }
}

impl<S> tokio_postgres::tls::TlsStream for TlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// DSQL authenticates with an IAM token sent as a cleartext password inside TLS; SCRAM
    /// channel binding does not apply, so none is offered.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

pub(crate) fn is_tls_error(err: &tokio_postgres::Error) -> Option<&TlsError> {
    let mut next = std::error::Error::source(err);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<TlsError>() {
            return Some(tls);
        }
        next = e.source();
    }
    None
}
