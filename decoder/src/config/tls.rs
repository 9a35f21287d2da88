//! The TLS settings of a connection, resolved the way libpq resolves them: `sslmode`,
//! `sslrootcert`, `sslcert`, `sslkey`, `sslsni` and `channel_binding`, from the connection string
//! or the `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`, `PGSSLSNI` and
//! `PGCHANNELBINDING` variables, with libpq's default files under `~/.postgresql/`.
//!
//! See <https://www.postgresql.org/docs/current/libpq-ssl.html>. Only the settings live here;
//! loading the files and the handshake are [`crate::tls`]'s.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::ConfigError;

/// libpq's `sslmode`.
///
/// | mode | TLS | server certificate |
/// |---|---|---|
/// | `disable` | never | — |
/// | `allow` | only when a plaintext attempt is refused | as `require` |
/// | `prefer` (default) | when the server offers it | as `require` |
/// | `require` | always | not checked, unless a root certificate file exists: then as `verify-ca` |
/// | `verify-ca` | always | signed by a trusted CA |
/// | `verify-full` | always | signed by a trusted CA, and issued for the host name |
///
/// Unix-domain sockets never use TLS, whatever the mode (as in libpq).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// Plaintext first; TLS if the server refuses the plaintext connection.
    Allow,
    /// TLS when the server offers it, plaintext when it does not (libpq's default).
    #[default]
    Prefer,
    /// TLS; the certificate is checked only when a root certificate file exists.
    Require,
    /// TLS with the certificate chain checked against the root certificates.
    VerifyCa,
    /// TLS with the chain and the host name checked.
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// True for the modes that refuse a connection without TLS.
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }

    /// True for the modes that always check the certificate chain.
    pub fn verifies_chain(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return Err(()),
        })
    }
}

/// libpq's `channel_binding`: whether SCRAM authentication binds itself to the TLS session
/// (`SCRAM-SHA-256-PLUS` with `tls-server-end-point`), proving the server that answered the
/// handshake also knows the password's verifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelBinding {
    /// Never use channel binding.
    Disable,
    /// Use it when the connection is TLS and the server offers `SCRAM-SHA-256-PLUS`.
    #[default]
    Prefer,
    /// Fail unless the server authenticates with `SCRAM-SHA-256-PLUS` over TLS.
    Require,
}

impl ChannelBinding {
    /// The libpq spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelBinding::Disable => "disable",
            ChannelBinding::Prefer => "prefer",
            ChannelBinding::Require => "require",
        }
    }
}

impl fmt::Display for ChannelBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the trusted root certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file of CA certificates (libpq's default is `~/.postgresql/root.crt`, used only
    /// when it exists).
    File(PathBuf),
    /// The platform's trusted roots (`sslrootcert=system`, libpq 16).
    System,
}

/// The resolved TLS settings of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    mode: SslMode,
    root_cert: Option<RootCert>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    sni: bool,
    channel_binding: ChannelBinding,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            mode: SslMode::default(),
            root_cert: None,
            cert: None,
            key: None,
            sni: true,
            channel_binding: ChannelBinding::default(),
        }
    }
}

/// The TLS keywords as written in a connection string, before fallbacks.
#[derive(Debug, Default)]
pub(super) struct GivenTls {
    pub(super) sslmode: Option<String>,
    pub(super) sslrootcert: Option<String>,
    pub(super) sslcert: Option<String>,
    pub(super) sslkey: Option<String>,
    pub(super) sslsni: Option<String>,
    pub(super) channel_binding: Option<String>,
}

impl GivenTls {
    /// Takes `other`'s value for every TLS setting not given here (a service file's).
    pub(super) fn fill_from(&mut self, other: GivenTls) {
        let GivenTls {
            sslmode,
            sslrootcert,
            sslcert,
            sslkey,
            sslsni,
            channel_binding,
        } = other;
        for (mine, theirs) in [
            (&mut self.sslmode, sslmode),
            (&mut self.sslrootcert, sslrootcert),
            (&mut self.sslcert, sslcert),
            (&mut self.sslkey, sslkey),
            (&mut self.sslsni, sslsni),
            (&mut self.channel_binding, channel_binding),
        ] {
            if mine.is_none() {
                *mine = theirs;
            }
        }
    }

    /// The slot for a TLS keyword, or `None` when `key` is not one.
    pub(super) fn slot(&mut self, key: &str) -> Option<&mut Option<String>> {
        Some(match key {
            "sslmode" => &mut self.sslmode,
            "sslrootcert" => &mut self.sslrootcert,
            "sslcert" => &mut self.sslcert,
            "sslkey" => &mut self.sslkey,
            "sslsni" => &mut self.sslsni,
            "channel_binding" => &mut self.channel_binding,
            _ => return None,
        })
    }

    /// Applies the environment and libpq's defaults. `home` is the user's home directory, where
    /// `~/.postgresql/` holds the default certificate files.
    pub(super) fn resolve(
        self,
        env: &dyn Fn(&str) -> Option<String>,
        home: Option<&Path>,
    ) -> Result<TlsSettings, ConfigError> {
        let pick = |value: Option<String>, var: &'static str, key: &'static str| match value {
            Some(v) => Some((key, v)),
            None => env(var).map(|v| (var, v)),
        };
        let default_file = |name: &str| home.map(|h| h.join(".postgresql").join(name));

        let root_cert = match pick(self.sslrootcert, "PGSSLROOTCERT", "sslrootcert") {
            Some((_, v)) if v == "system" => Some(RootCert::System),
            Some((_, v)) => Some(RootCert::File(PathBuf::from(v))),
            None => default_file("root.crt").map(RootCert::File),
        };
        let mode = match pick(self.sslmode, "PGSSLMODE", "sslmode") {
            Some((key, v)) => parse_sslmode(key, v)?,
            // libpq 16: the system's roots are only worth anything with the host name checked.
            None if root_cert == Some(RootCert::System) => SslMode::VerifyFull,
            None => SslMode::default(),
        };
        if root_cert == Some(RootCert::System) && mode != SslMode::VerifyFull {
            return Err(ConfigError::WeakSslModeForSystemRoots { sslmode: mode });
        }
        let cert = pick(self.sslcert, "PGSSLCERT", "sslcert")
            .map(|(_, v)| PathBuf::from(v))
            .or_else(|| default_file("postgresql.crt"));
        let key = pick(self.sslkey, "PGSSLKEY", "sslkey")
            .map(|(_, v)| PathBuf::from(v))
            .or_else(|| default_file("postgresql.key"));
        let sni = match pick(self.sslsni, "PGSSLSNI", "sslsni") {
            Some((_, v)) if v == "1" => true,
            Some((_, v)) if v == "0" => false,
            Some((key, value)) => {
                return Err(ConfigError::InvalidValue {
                    key,
                    value,
                    expected: "0 or 1",
                })
            }
            None => true,
        };
        let channel_binding =
            match pick(self.channel_binding, "PGCHANNELBINDING", "channel_binding") {
                Some((_, v)) if v == "disable" => ChannelBinding::Disable,
                Some((_, v)) if v == "prefer" => ChannelBinding::Prefer,
                Some((_, v)) if v == "require" => ChannelBinding::Require,
                Some((key, value)) => {
                    return Err(ConfigError::InvalidValue {
                        key,
                        value,
                        expected: "one of disable, prefer, require",
                    })
                }
                None => ChannelBinding::default(),
            };
        if channel_binding == ChannelBinding::Require && mode == SslMode::Disable {
            return Err(ConfigError::ChannelBindingWithoutTls);
        }
        Ok(TlsSettings {
            mode,
            root_cert,
            cert,
            key,
            sni,
            channel_binding,
        })
    }
}

impl TlsSettings {
    /// `sslmode`.
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// The root certificates: the file named by `sslrootcert` (or libpq's default
    /// `~/.postgresql/root.crt`, which may not exist), or the system's.
    pub fn root_cert(&self) -> Option<&RootCert> {
        self.root_cert.as_ref()
    }

    /// The client certificate file (`sslcert`, default `~/.postgresql/postgresql.crt`), used
    /// when it exists.
    pub fn cert(&self) -> Option<&Path> {
        self.cert.as_deref()
    }

    /// The client certificate's private key (`sslkey`, default `~/.postgresql/postgresql.key`).
    pub fn key(&self) -> Option<&Path> {
        self.key.as_deref()
    }

    /// Whether the host name is sent as TLS Server Name Indication (`sslsni`, default on; never
    /// for an IP address).
    pub fn sni(&self) -> bool {
        self.sni
    }

    /// `channel_binding`.
    pub fn channel_binding(&self) -> ChannelBinding {
        self.channel_binding
    }

    /// Sets `sslmode`.
    pub fn set_mode(&mut self, mode: SslMode) -> &mut Self {
        self.mode = mode;
        self
    }

    /// Sets the root certificates.
    pub fn set_root_cert(&mut self, root_cert: Option<RootCert>) -> &mut Self {
        self.root_cert = root_cert;
        self
    }

    /// Sets the client certificate and its key.
    pub fn set_client_cert(&mut self, cert: Option<PathBuf>, key: Option<PathBuf>) -> &mut Self {
        self.cert = cert;
        self.key = key;
        self
    }

    /// Sets `channel_binding`.
    pub fn set_channel_binding(&mut self, channel_binding: ChannelBinding) -> &mut Self {
        self.channel_binding = channel_binding;
        self
    }
}

fn parse_sslmode(key: &'static str, value: String) -> Result<SslMode, ConfigError> {
    value.parse().map_err(|()| ConfigError::InvalidValue {
        key,
        value,
        expected: "one of disable, allow, prefer, require, verify-ca, verify-full",
    })
}
