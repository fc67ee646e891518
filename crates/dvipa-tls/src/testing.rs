//! A throw-away certificate authority for tests (rcgen).
//!
//! ```
//! let ca = dvipa_tls::testing::TestCa::new("dvipa test CA").unwrap();
//! let controller = ca.server_bundle(&["localhost", "127.0.0.1"]).unwrap();
//! let agent = ca.client_bundle("stack1").unwrap();
//! assert!(controller.validate().is_ok() && agent.validate().is_ok());
//! ```

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::{PemBundle, TlsError};

/// A self-signed CA that issues server and client certificates.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
}

impl TestCa {
    /// A new CA with a fresh key; `common_name` names it.
    pub fn new(common_name: &str) -> Result<Self, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(TestCa {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Result<PemBundle, TlsError> {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<String>>())?;
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(PemBundle {
            ca_pem: self.ca_pem.clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            source: None,
        })
    }

    /// A server (controller) certificate for `names` (DNS names or IP addresses).
    pub fn server_bundle(&self, names: &[&str]) -> Result<PemBundle, TlsError> {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate with several names (e.g. one that names two stacks, which the
    /// controller refuses).
    pub fn client_bundle_names(&self, names: &[&str]) -> Result<PemBundle, TlsError> {
        self.issue(names, ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A client (agent) certificate whose name is the stack name `stack`.
    pub fn client_bundle(&self, stack: &str) -> Result<PemBundle, TlsError> {
        self.issue(&[stack], ExtendedKeyUsagePurpose::ClientAuth)
    }
}
