//! Test certificates made at run time with `rcgen` (ECDSA P-256, SHA-256 signatures): a test CA,
//! server certificates for `localhost`/`127.0.0.1`, for a wrong host name and from an unknown
//! CA, and client certificates for `cert` authentication. Nothing is checked in; every test run
//! makes its own.
//!
//! ```no_run
//! let pki = blueshift_tests::TestPki::generate()?;
//! let opts = blueshift_tests::ClusterOptions::new(blueshift_tests::PgBinaries::major(15)?)
//!     .tls(&pki.server);
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, mode 0600).
    pub key: PathBuf,
    /// The CA certificate clients should trust for it, or that signs client certificates the
    /// server accepts (PEM).
    pub ca: PathBuf,
}

/// Every certificate a TLS test needs, in a temp folder removed on drop.
#[derive(Debug)]
pub struct TestPki {
    dir: TempDir,
    /// The test CA's certificate: `sslrootcert` for clients, `ssl_ca_file` for servers.
    pub ca: PathBuf,
    /// A server certificate for `localhost` and `127.0.0.1`, signed by the test CA.
    pub server: CertFiles,
    /// A server certificate for `wrong.example` only, signed by the test CA.
    pub wrong_host: CertFiles,
    /// A server certificate for `localhost`/`127.0.0.1` signed by a CA nobody trusts.
    pub unknown_ca: CertFiles,
    /// A client certificate with CN `client_user`, signed by the test CA.
    pub client: CertFiles,
}

struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestPki {
    /// Makes a fresh set in a new temp folder.
    pub fn generate() -> anyhow::Result<TestPki> {
        let dir = tempfile::Builder::new()
            .prefix("blueshift-pki-")
            .tempdir()
            .context("could not create a folder for test certificates")?;
        let ca = authority("blueshift test CA")?;
        let rogue = authority("an unknown CA")?;
        let ca_path = dir.path().join("ca.crt");
        std::fs::write(&ca_path, ca.cert.pem())?;
        let rogue_path = dir.path().join("rogue-ca.crt");
        std::fs::write(&rogue_path, rogue.cert.pem())?;
        let local = ["localhost", "127.0.0.1"];
        let server = leaf(
            dir.path(),
            "server",
            &local,
            "localhost",
            &ca,
            &ca_path,
            true,
        )?;
        let wrong_host = leaf(
            dir.path(),
            "wrong-host",
            &["wrong.example"],
            "wrong.example",
            &ca,
            &ca_path,
            true,
        )?;
        let unknown_ca = leaf(
            dir.path(),
            "unknown-ca",
            &local,
            "localhost",
            &rogue,
            &rogue_path,
            true,
        )?;
        let client = leaf(
            dir.path(),
            "client",
            &[],
            "client_user",
            &ca,
            &ca_path,
            false,
        )?;
        Ok(TestPki {
            dir,
            ca: ca_path,
            server,
            wrong_host,
            unknown_ca,
            client,
        })
    }

    /// The folder holding every file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn authority(name: &str) -> anyhow::Result<Authority> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(Authority { cert, key })
}

fn leaf(
    dir: &Path,
    name: &str,
    sans: &[&str],
    common_name: &str,
    issuer: &Authority,
    issuer_path: &Path,
    server: bool,
) -> anyhow::Result<CertFiles> {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer.cert, &issuer.key)?;
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, cert.pem())?;
    write_private(&key_path, &key.serialize_pem())?;
    Ok(CertFiles {
        cert: cert_path,
        key: key_path,
        ca: issuer_path.to_path_buf(),
    })
}

/// Writes a key file readable by its owner only, as libpq and the server require.
pub(crate) fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}
