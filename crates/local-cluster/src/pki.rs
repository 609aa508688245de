//! The cluster's certificates: one CA, the API server's serving certificate, an admin
//! client certificate (group `system:masters`) and the service-account signing key.
//! ECDSA P-256 throughout: Go's TLS stack and rustls (kube-rs) both accept it.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::error::{Error, IoContext};

/// Paths of the PEM files written by [`generate`].
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub apiserver_cert: PathBuf,
    pub apiserver_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub service_account_key: PathBuf,
    pub service_account_pub: PathBuf,
}

impl Pki {
    /// The file layout under `dir`, whether or not it was generated yet.
    pub fn at(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            ca_cert: dir.join("ca.crt"),
            apiserver_cert: dir.join("apiserver.crt"),
            apiserver_key: dir.join("apiserver.key"),
            admin_cert: dir.join("admin.crt"),
            admin_key: dir.join("admin.key"),
            service_account_key: dir.join("sa.key"),
            service_account_pub: dir.join("sa.pub"),
        }
    }
}

/// Generate a fresh PKI under `dir`.
pub fn generate(dir: &Path) -> Result<Pki, Error> {
    std::fs::create_dir_all(dir).at(dir)?;
    let pki = Pki::at(dir);

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "cutover-local-cluster-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(vec![
        "127.0.0.1".to_string(),
        "::1".to_string(),
        "10.96.0.1".to_string(),
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        "kubernetes.default.svc.cluster.local".to_string(),
    ])?;
    server
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let server_cert = server.signed_by(&server_key, &issuer)?;

    let admin_key = KeyPair::generate()?;
    let mut admin = CertificateParams::new(Vec::<String>::new())?;
    admin
        .distinguished_name
        .push(DnType::CommonName, "cutover-admin");
    admin
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    admin.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let admin_cert = admin.signed_by(&admin_key, &issuer)?;

    let sa_key = KeyPair::generate()?;

    write(&pki.ca_cert, &ca_cert.pem())?;
    write(&pki.apiserver_cert, &server_cert.pem())?;
    write(&pki.apiserver_key, &server_key.serialize_pem())?;
    write(&pki.admin_cert, &admin_cert.pem())?;
    write(&pki.admin_key, &admin_key.serialize_pem())?;
    write(&pki.service_account_key, &sa_key.serialize_pem())?;
    // The apiserver verifies tokens with the public half; it does not derive it from a
    // PKCS#8 private key.
    write(&pki.service_account_pub, &sa_key.public_key_pem())?;
    Ok(pki)
}

fn write(path: &Path, pem: &str) -> Result<(), Error> {
    std::fs::write(path, pem).at(path)
}

/// A kubeconfig for the admin user with every credential embedded, so the file can be
/// copied anywhere.
pub fn kubeconfig(pki: &Pki, cluster: &str, api_port: u16) -> Result<String, Error> {
    let b64 = |p: &Path| -> Result<String, Error> {
        let bytes = std::fs::read(p).at(p)?;
        Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
    };
    Ok(format!(
        "apiVersion: v1
kind: Config
clusters:
- name: {cluster}
  cluster:
    server: https://127.0.0.1:{api_port}
    certificate-authority-data: {ca}
users:
- name: {cluster}-admin
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: {cluster}
  context:
    cluster: {cluster}
    user: {cluster}-admin
current-context: {cluster}
",
        ca = b64(&pki.ca_cert)?,
        cert = b64(&pki.admin_cert)?,
        key = b64(&pki.admin_key)?,
    ))
}
