//! The cluster's certificates: one CA (its key kept, so identities can be minted later:
//! a real node's `system:node:<name>`), the API server's serving certificate, an admin
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
    pub ca_key: PathBuf,
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
            ca_key: dir.join("ca.key"),
            apiserver_cert: dir.join("apiserver.crt"),
            apiserver_key: dir.join("apiserver.key"),
            admin_cert: dir.join("admin.crt"),
            admin_key: dir.join("admin.key"),
            service_account_key: dir.join("sa.key"),
            service_account_pub: dir.join("sa.pub"),
        }
    }
}

/// Generate a fresh PKI under `dir`; the API server's certificate also names `extra_ips`
/// (the address it serves pods on, with a real node).
pub fn generate(dir: &Path, extra_ips: &[String]) -> Result<Pki, Error> {
    std::fs::create_dir_all(dir).at(dir)?;
    let pki = Pki::at(dir);

    let ca_key = KeyPair::generate()?;
    let ca = ca_params()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let server_key = KeyPair::generate()?;
    let mut names = vec![
        "127.0.0.1".to_string(),
        "::1".to_string(),
        "10.96.0.1".to_string(),
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        "kubernetes.default.svc.cluster.local".to_string(),
    ];
    names.extend(extra_ips.iter().cloned());
    let mut server = CertificateParams::new(names)?;
    server
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let server_cert = server.signed_by(&server_key, &issuer)?;

    let (admin_cert, admin_key) = client(&issuer, "cutover-admin", Some("system:masters"))?;

    let sa_key = KeyPair::generate()?;

    write(&pki.ca_cert, &ca_cert.pem())?;
    write(&pki.ca_key, &issuer.key().serialize_pem())?;
    write(&pki.apiserver_cert, &server_cert.pem())?;
    write(&pki.apiserver_key, &server_key.serialize_pem())?;
    write(&pki.admin_cert, &admin_cert)?;
    write(&pki.admin_key, &admin_key)?;
    write(&pki.service_account_key, &sa_key.serialize_pem())?;
    // The apiserver verifies tokens with the public half; it does not derive it from a
    // PKCS#8 private key.
    write(&pki.service_account_pub, &sa_key.public_key_pem())?;
    Ok(pki)
}

/// The CA's parameters: the same at generation and when it signs later, so a certificate
/// minted then names the issuer (and its key identifier) the CA certificate has.
fn ca_params() -> Result<CertificateParams, Error> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "cutover-local-cluster-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(ca)
}

/// A client certificate and key (PEM) for user `cn` in group `org`, signed by `issuer`.
fn client(
    issuer: &Issuer<'_, KeyPair>,
    cn: &str,
    org: Option<&str>,
) -> Result<(String, String), Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, cn);
    if let Some(org) = org {
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Mint a client identity (user `cn`, group `org`) with the cluster's CA and write it as
/// `<file>.crt` and `<file>.key` beside the CA; returns the two paths.
pub fn mint_client(
    pki: &Pki,
    file: &str,
    cn: &str,
    org: Option<&str>,
) -> Result<(PathBuf, PathBuf), Error> {
    let key_pem = std::fs::read_to_string(&pki.ca_key).at(&pki.ca_key)?;
    let issuer = Issuer::new(ca_params()?, KeyPair::from_pem(&key_pem)?);
    let (cert, key) = client(&issuer, cn, org)?;
    let (cert_path, key_path) = (
        pki.dir.join(format!("{file}.crt")),
        pki.dir.join(format!("{file}.key")),
    );
    write(&cert_path, &cert)?;
    write(&key_path, &key)?;
    Ok((cert_path, key_path))
}

fn write(path: &Path, pem: &str) -> Result<(), Error> {
    std::fs::write(path, pem).at(path)
}

/// A kubeconfig for the admin user with every credential embedded, so the file can be
/// copied anywhere. `server` is `https://host:port`.
pub fn kubeconfig(pki: &Pki, cluster: &str, server: &str) -> Result<String, Error> {
    kubeconfig_as(
        pki,
        cluster,
        server,
        "admin",
        &pki.admin_cert,
        &pki.admin_key,
    )
}

/// A kubeconfig for the identity in `cert`/`key` (named `user` in the file), every
/// credential embedded.
pub fn kubeconfig_as(
    pki: &Pki,
    cluster: &str,
    server: &str,
    user: &str,
    cert: &Path,
    key: &Path,
) -> Result<String, Error> {
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
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {cluster}-{user}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: {cluster}
  context:
    cluster: {cluster}
    user: {cluster}-{user}
current-context: {cluster}
",
        ca = b64(&pki.ca_cert)?,
        cert = b64(cert)?,
        key = b64(key)?,
    ))
}
