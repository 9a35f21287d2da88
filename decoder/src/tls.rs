//! TLS for every connection blueshift opens, with rustls (no OpenSSL), following libpq's
//! `sslmode` semantics (<https://www.postgresql.org/docs/current/libpq-ssl.html>).
//!
//! [`TlsConnector::new`] turns a connection's [`TlsSettings`](crate::config::TlsSettings) into a
//! rustls client configuration: the root certificates (a PEM file, or the system's with
//! `sslrootcert=system`), the certificate check the mode asks for (`verify`), an optional client
//! certificate, SNI and ALPN `postgresql`. [`TlsConnector::handshake`] wraps any byte stream
//! after the server accepted the `SSLRequest`. The replication connection
//! ([`crate::connection`]) and the SQL client (`blueshift_applier::client`) both use it, so both
//! behave the same. [`channel_binding`] computes the `tls-server-end-point` data for
//! `SCRAM-SHA-256-PLUS` (`binding`).
//!
//! A certificate that does not verify ends the handshake, before the startup message (and so
//! before any credential or query) is sent; the error names the host and why.

mod binding;
mod verify;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};

pub use binding::channel_binding;

use crate::config::{ConnectConfig, Host, RootCert, SslMode};

/// The ALPN protocol PostgreSQL 17 expects (libpq 17 sends it too; older servers ignore it).
const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// Why TLS could not be set up or the handshake failed. The texts name the file or host and
/// the fix; none carries a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// `verify-ca`/`verify-full` without a root certificate file.
    #[error("root certificate file \"{}\" does not exist — sslmode={sslmode} needs it to check the server's certificate: provide the file, use sslrootcert=system for the system's trusted roots, or use sslmode=require to skip the check", path.display())]
    RootCertMissing {
        /// The file looked for.
        path: PathBuf,
        /// The mode that needs it.
        sslmode: SslMode,
    },
    /// A certificate or key file that cannot be read.
    #[error("could not read {what} \"{}\"", path.display())]
    Read {
        /// Which file: root certificate, client certificate, private key.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file that holds no usable certificate or key.
    #[error("{what} \"{}\" holds no usable {expected} — it must be PEM ({problem})", path.display())]
    BadFile {
        /// Which file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What it should hold.
        expected: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A client certificate without its key.
    #[error("certificate present, but not private key file \"{}\" — set sslkey to the key of sslcert", path.display())]
    KeyMissing {
        /// Where the key was looked for.
        path: PathBuf,
    },
    /// A private key others can read.
    #[error("private key file \"{}\" has group or world access; it must have permissions u=rw (0600) or less if owned by the current user, or u=rw,g=r (0640) or less if owned by root — chmod 0600 it", path.display())]
    KeyPermissions {
        /// The key file.
        path: PathBuf,
    },
    /// The client certificate and key do not go together, or rustls refused them.
    #[error("the client certificate \"{}\" cannot be used with its key \"{}\"", cert.display(), key.display())]
    ClientCert {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// The cause.
        #[source]
        source: rustls::Error,
    },
    /// `sslrootcert=system` but the platform has no trusted roots.
    #[error("sslrootcert=system but no trusted root certificates were found on this system — install the ca-certificates package or name a root certificate file")]
    NoSystemRoots,
    /// `verify-full` with a host that is neither a DNS name nor an IP address.
    #[error("host \"{host}\" is not a valid DNS name or IP address, so sslmode=verify-full cannot check the server's certificate against it")]
    InvalidHostName {
        /// The host.
        host: String,
    },
    /// The server's certificate did not verify.
    #[error("the server certificate of \"{host}\" does not verify: {reason} — {fix}")]
    Certificate {
        /// The server, `host:port`.
        host: String,
        /// Why, in words.
        reason: String,
        /// What to do.
        fix: &'static str,
        /// The handshake's error.
        #[source]
        source: io::Error,
    },
    /// The handshake failed for another reason (the server refused our certificate, a protocol
    /// mismatch, the connection broke).
    #[error("TLS handshake with \"{host}\" failed")]
    Handshake {
        /// The server, `host:port`.
        host: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The server answered the `SSLRequest` with `N` under a mode that requires TLS.
    #[error("server \"{host}\" does not support TLS, but sslmode={sslmode} requires it — enable ssl on the server, or use sslmode=prefer")]
    NotOffered {
        /// The server, `host:port`.
        host: String,
        /// The mode.
        sslmode: SslMode,
    },
}

impl TlsError {
    /// True when trying again may help: the connection broke during the handshake. A
    /// certificate or a file that is wrong stays wrong.
    pub fn is_transient(&self) -> bool {
        match self {
            TlsError::Handshake { source, .. } => source
                .get_ref()
                .and_then(|e| e.downcast_ref::<rustls::Error>())
                .is_none(),
            _ => false,
        }
    }
}

/// A rustls client configuration for one server, built from the connection settings.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    /// `host:port`, for messages.
    target: String,
    /// The roots the chain was checked against, for messages.
    roots: Option<String>,
    mode: SslMode,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("target", &self.target)
            .field("mode", &self.mode)
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// The connector for `config`'s server, or `None` when the connection never uses TLS
    /// (`sslmode=disable`, or a Unix-domain socket, as libpq). Reads the certificate files.
    pub fn new(config: &ConnectConfig) -> Result<Option<TlsConnector>, TlsError> {
        let settings = config.tls();
        let mode = settings.mode();
        let host = match config.host() {
            Host::Tcp(host) => host,
            Host::Unix(_) => return Ok(None),
        };
        if mode == SslMode::Disable {
            return Ok(None);
        }
        let server_name = match ServerName::try_from(host.as_str()) {
            Ok(name) => name.to_owned(),
            Err(_) if mode == SslMode::VerifyFull => {
                return Err(TlsError::InvalidHostName { host: host.clone() })
            }
            // The name is not checked: any placeholder will do, and an IP address sends no SNI.
            Err(_) => ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into()),
        };
        let provider = Arc::new(provider());
        let roots = load_roots(settings.root_cert(), mode)?;
        let verifier: Arc<dyn ServerCertVerifier> = match &roots {
            Some((store, _)) => {
                verify::chain_verifier(Arc::clone(store), &provider, mode == SslMode::VerifyFull)
            }
            None => Arc::new(verify::Unverified::new(&provider)),
        };
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("ring's provider supports TLS 1.2 and 1.3")
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut client = match load_client_cert(settings.cert(), settings.key())? {
            Some((certs, key, cert_path, key_path)) => builder
                .with_client_auth_cert(certs, key)
                .map_err(|source| TlsError::ClientCert {
                    cert: cert_path,
                    key: key_path,
                    source,
                })?,
            None => builder.with_no_client_auth(),
        };
        client.enable_sni = settings.sni();
        client.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
        Ok(Some(TlsConnector {
            config: Arc::new(client),
            server_name,
            target: format!("{}:{}", config.host(), config.port()),
            roots: roots.map(|(_, name)| name),
            mode,
        }))
    }

    /// The mode this connector was built for.
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// `host:port`, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The error for a server that answered the `SSLRequest` with `N`.
    pub fn not_offered(&self) -> TlsError {
        TlsError::NotOffered {
            host: self.target.clone(),
            sslmode: self.mode,
        }
    }

    /// Runs the TLS handshake over `stream` (after the server accepted the `SSLRequest`).
    pub async fn handshake<S>(
        &self,
        stream: S,
    ) -> Result<tokio_rustls::client::TlsStream<S>, TlsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&self.config));
        let tls = connector
            .connect(self.server_name.clone(), stream)
            .await
            .map_err(|e| self.handshake_error(e))?;
        tracing::debug!(
            server = %self.target,
            protocol = ?tls.get_ref().1.protocol_version(),
            cipher = ?tls.get_ref().1.negotiated_cipher_suite().map(|s| s.suite()),
            "tls established"
        );
        Ok(tls)
    }

    fn handshake_error(&self, source: io::Error) -> TlsError {
        let host = self.target.clone();
        let Some(rustls::Error::InvalidCertificate(problem)) = source
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        else {
            return TlsError::Handshake { host, source };
        };
        let roots = self.roots.as_deref().unwrap_or("the root certificates");
        let (reason, fix) = match problem {
            CertificateError::UnknownIssuer => (
                format!("it is not signed by a certificate authority trusted by {roots}"),
                "set sslrootcert to the CA that signed the server's certificate",
            ),
            CertificateError::NotValidForName
            | CertificateError::NotValidForNameContext { .. } => (
                format!(
                    "it was not issued for the host name {}",
                    server_name_text(&self.server_name)
                ),
                "connect with the host name the certificate was issued for (its subjectAltName), or use sslmode=verify-ca to check only the chain",
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => (
                "it has expired".to_owned(),
                "renew the server's certificate",
            ),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => (
                "it is not valid yet".to_owned(),
                "check the clocks, or the certificate's notBefore date",
            ),
            CertificateError::Revoked => (
                "it has been revoked".to_owned(),
                "install a new certificate on the server",
            ),
            other => (
                format!("{other:?}"),
                "check the server's certificate and sslrootcert",
            ),
        };
        TlsError::Certificate {
            host,
            reason,
            fix,
            source,
        }
    }
}

/// rustls' *ring* provider: a pure Rust and assembly build (aws-lc-rs would need a C/CMake
/// toolchain). rustls 0.23.48 deprecates it only because it lacks post-quantum key exchange,
/// which PostgreSQL's servers do not offer before OpenSSL 3.5.
#[allow(deprecated)]
fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn server_name_text(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(dns) => format!("\"{}\"", dns.as_ref()),
        ServerName::IpAddress(ip) => format!("\"{}\"", std::net::IpAddr::from(*ip)),
        other => format!("{other:?}"),
    }
}

/// The trusted roots and a name for them, or `None` when the mode does not check the chain and
/// no root certificate file exists (libpq's `require` without `root.crt`).
fn load_roots(
    root_cert: Option<&RootCert>,
    mode: SslMode,
) -> Result<Option<(Arc<RootCertStore>, String)>, TlsError> {
    let mut store = RootCertStore::empty();
    match root_cert {
        Some(RootCert::System) => {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::debug!(error = %error, "skipping an unreadable system root certificate");
            }
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsError::NoSystemRoots);
            }
            Ok(Some((Arc::new(store), "the system's roots".to_owned())))
        }
        Some(RootCert::File(path)) => {
            let bytes = match std::fs::read(path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::NotFound && !mode.verifies_chain() => {
                    return Ok(None)
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(TlsError::RootCertMissing {
                        path: path.clone(),
                        sslmode: mode,
                    })
                }
                Err(source) => {
                    return Err(TlsError::Read {
                        what: "root certificate file",
                        path: path.clone(),
                        source,
                    })
                }
            };
            let certs = parse_certs(&bytes, "root certificate file", path)?;
            let (added, ignored) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(TlsError::BadFile {
                    what: "root certificate file",
                    path: path.clone(),
                    expected: "CA certificate",
                    problem: format!("{ignored} certificate(s) could not be parsed"),
                });
            }
            Ok(Some((Arc::new(store), format!("\"{}\"", path.display()))))
        }
        None if mode.verifies_chain() => Err(TlsError::RootCertMissing {
            path: PathBuf::from("~/.postgresql/root.crt"),
            sslmode: mode,
        }),
        None => Ok(None),
    }
}

fn parse_certs(
    bytes: &[u8],
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |problem: String| TlsError::BadFile {
        what,
        path: path.to_path_buf(),
        expected: "certificate",
        problem,
    };
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no BEGIN CERTIFICATE block".to_owned()));
    }
    Ok(certs)
}

type ClientCert = (
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
    PathBuf,
    PathBuf,
);

/// The client certificate chain and key, when the certificate file exists (libpq sends none
/// otherwise, even when `sslcert` names a file).
fn load_client_cert(
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<ClientCert>, TlsError> {
    let Some(cert_path) = cert else {
        return Ok(None);
    };
    let cert_bytes = match std::fs::read(cert_path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(TlsError::Read {
                what: "client certificate file",
                path: cert_path.to_path_buf(),
                source,
            })
        }
    };
    let certs = parse_certs(&cert_bytes, "client certificate file", cert_path)?;
    let key_path = key
        .map(Path::to_path_buf)
        .unwrap_or_else(|| cert_path.with_extension("key"));
    let metadata = match std::fs::metadata(&key_path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(TlsError::KeyMissing { path: key_path })
        }
        Err(source) => {
            return Err(TlsError::Read {
                what: "private key file",
                path: key_path,
                source,
            })
        }
    };
    check_key_permissions(&metadata, &key_path)?;
    let key_bytes = std::fs::read(&key_path).map_err(|source| TlsError::Read {
        what: "private key file",
        path: key_path.clone(),
        source,
    })?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| TlsError::BadFile {
        what: "private key file",
        path: key_path.clone(),
        expected: "private key",
        problem: e.to_string(),
    })?;
    Ok(Some((certs, key, cert_path.to_path_buf(), key_path)))
}

/// libpq's rule: a key owned by root may be `0640`, any other at most `0600`.
fn check_key_permissions(metadata: &std::fs::Metadata, path: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::MetadataExt;
    let mode = metadata.mode();
    let too_open = if metadata.uid() == 0 {
        mode & 0o037 != 0
    } else {
        mode & 0o077 != 0
    };
    if too_open {
        return Err(TlsError::KeyPermissions {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(conninfo: &str) -> ConnectConfig {
        ConnectConfig::from_conninfo_with_env(conninfo, |_| None).unwrap()
    }

    #[test]
    fn no_tls_for_disable_and_unix_sockets() {
        assert!(TlsConnector::new(&config("host=h sslmode=disable"))
            .unwrap()
            .is_none());
        assert!(TlsConnector::new(&config("host=/tmp sslmode=verify-full"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn verify_modes_need_a_root_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("root.crt");
        for mode in ["verify-ca", "verify-full"] {
            let err = TlsConnector::new(&config(&format!(
                "host=h sslmode={mode} sslrootcert={}",
                missing.display()
            )))
            .unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, TlsError::RootCertMissing { .. }), "{text}");
            assert!(text.contains("root.crt") && text.contains(mode), "{text}");
        }
        // require without the file: encrypted, unchecked.
        let c = TlsConnector::new(&config(&format!(
            "host=h sslmode=require sslrootcert={}",
            missing.display()
        )))
        .unwrap()
        .unwrap();
        assert!(c.roots.is_none());
    }

    #[test]
    fn garbage_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root.crt");
        std::fs::write(&root, "not a certificate").unwrap();
        let err = TlsConnector::new(&config(&format!(
            "host=h sslmode=verify-ca sslrootcert={}",
            root.display()
        )))
        .unwrap_err();
        assert!(matches!(err, TlsError::BadFile { .. }), "{err}");
        assert!(err.to_string().contains("root.crt"), "{err}");
    }

    #[test]
    fn key_permissions_follow_libpq() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        std::fs::write(&key, "x").unwrap();
        let check = |mode: u32| {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            check_key_permissions(&std::fs::metadata(&key).unwrap(), &key)
        };
        assert!(check(0o600).is_ok());
        assert!(check(0o400).is_ok());
        assert!(check(0o604).is_err());
        let owned_by_root = std::fs::metadata(&key).unwrap().uid() == 0;
        // Root-owned keys may be group-readable.
        assert_eq!(check(0o640).is_ok(), owned_by_root);
        assert!(check(0o660).is_err());
    }

    #[test]
    fn invalid_host_name_only_matters_for_verify_full() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("missing.crt");
        let err = TlsConnector::new(&config(&format!(
            "host=bad_name! sslmode=verify-full sslrootcert={}",
            root.display()
        )))
        .unwrap_err();
        assert!(matches!(err, TlsError::InvalidHostName { .. }), "{err}");
        assert!(err.to_string().contains("bad_name!"), "{err}");
        assert!(TlsConnector::new(&config(&format!(
            "host=bad_name! sslmode=require sslrootcert={}",
            root.display()
        )))
        .unwrap()
        .is_some());
    }
}
