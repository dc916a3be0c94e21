//! A throwaway certificate authority and a server certificate for
//! 127.0.0.1 and localhost, written as PEM files, for tests of TLS to Redis.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// PEM files of a test CA and a server certificate it signed.
#[derive(Debug, Clone)]
pub struct TestCertificates {
    /// The CA certificate: what a client must trust.
    pub ca: PathBuf,
    /// The server certificate (SANs 127.0.0.1 and localhost).
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

impl TestCertificates {
    /// Generates the CA and the server certificate into `dir`.
    pub fn generate(dir: &Path) -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "fanout test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_params(&ca_params, &ca_key);

        let server_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();

        let files = Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server-key.pem"),
        };
        std::fs::write(&files.ca, ca_cert.pem()).unwrap();
        std::fs::write(&files.cert, server_cert.pem()).unwrap();
        std::fs::write(&files.key, server_key.serialize_pem()).unwrap();
        files
    }
}
