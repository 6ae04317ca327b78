//! A throwaway CA and a server certificate for the gateway, generated at start.

use crate::Error;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The generated material: the CA (PEM, for clients' `sslrootcert`) and the server chain and key.
pub(crate) struct GatewayCerts {
    pub(crate) ca_pem: String,
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for GatewayCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayCerts")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// A CA named "dsql-local CA" and a server certificate for `*.dsql.<region>.on.aws`, `localhost`,
/// `127.0.0.1`, `::1` and the host aliases, signed by it.
pub(crate) fn generate(region: &str, aliases: &[String]) -> Result<GatewayCerts, Error> {
    let err = |e: rcgen::Error| Error::certificate(e.to_string());
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "dsql-local CA");
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "dsql-local (testing only)");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;

    let mut names = vec![
        format!("*.dsql.{region}.on.aws"),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    for alias in aliases {
        if !names.contains(alias) {
            names.push(alias.clone());
        }
    }
    let server_key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::new(names).map_err(err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("*.dsql.{region}.on.aws"));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let server_cert = params.signed_by(&server_key, &issuer).map_err(err)?;

    Ok(GatewayCerts {
        ca_pem: ca_cert.pem(),
        chain: vec![server_cert.der().clone(), ca_cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
    })
}
