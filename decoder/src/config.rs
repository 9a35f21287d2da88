//! Connection settings of the replication connection, resolved the way libpq resolves them.
//!
//! A [`ConnectConfig`] comes from a connection string in either of libpq's forms
//! (<https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING>), with the
//! `PG*` environment variables as fallbacks
//! (<https://www.postgresql.org/docs/current/libpq-envars.html>) and the password file
//! (<https://www.postgresql.org/docs/current/libpq-pgpass.html>) consulted at connect time when
//! the server asks for a password and none was given. Precedence, highest first: the connection
//! string, the environment, the password file (password only), the defaults.
//!
//! The environment is passed in ([`ConnectConfig::from_conninfo_with_env`]) so callers and tests
//! never have to touch the process environment.
//!
//! The password lives in a [`Password`], which prints as `***`; the configuration's `Display` is
//! the redacted target (`postgres@127.0.0.1:5432/db`) for logs, and no [`ConfigError`] carries a
//! value that could be a password.

pub(crate) mod conninfo;
pub(crate) mod pgpass;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub use conninfo::{Keyword, UriPart, UriProblem};

/// The default port, as libpq's `DEF_PGPORT`.
pub const DEFAULT_PORT: u16 = 5432;

/// Where Debian's libpq looks for the server's socket when no host is given.
const DEBIAN_SOCKET_DIR: &str = "/var/run/postgresql";
/// libpq's compiled-in socket directory elsewhere.
const FALLBACK_SOCKET_DIR: &str = "/tmp";
/// The user name when the environment names none.
const FALLBACK_USER: &str = "postgres";
/// libpq treats a `connect_timeout` below two seconds (but above zero) as two seconds.
const MIN_CONNECT_TIMEOUT_SECS: u64 = 2;

/// A password. `Debug` and `Display` print `***`; [`Password::expose`] is the only way to the
/// text, and is used only to answer the server's authentication request.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Password {
        Password(password.into())
    }

    /// The password itself. Never log or format it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A host name or IP address, reached over TCP.
    Tcp(String),
    /// A directory holding the server's Unix socket `<dir>/.s.PGSQL.<port>`.
    Unix(PathBuf),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Tcp(name) if name.contains(':') => write!(f, "[{name}]"),
            Host::Tcp(name) => f.write_str(name),
            Host::Unix(dir) => write!(f, "{}", dir.display()),
        }
    }
}

/// libpq's `sslmode`. Only the modes that may connect without TLS are usable for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS only if the server insists; connects without TLS here.
    Allow,
    /// TLS if the server supports it (libpq's default); connects without TLS here.
    #[default]
    Prefer,
    /// TLS, no certificate check. Not supported yet.
    Require,
    /// TLS with a CA check. Not supported yet.
    VerifyCa,
    /// TLS with CA and host name checks. Not supported yet.
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

/// A connection string or environment variable that cannot be used. The text names the bad
/// keyword or part and the fix; it never contains a value that could be a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Malformed URI part.
    #[error("invalid connection URI: {problem} (in {part})")]
    Uri {
        /// Which part.
        part: UriPart,
        /// What is wrong.
        problem: UriProblem,
    },
    /// A keyword not followed by `=`.
    #[error("missing \"=\" after keyword {key} in the connection string — write keyword=value, and quote values containing spaces as 'a value'")]
    MissingEquals {
        /// The keyword (shown only when it is a libpq keyword).
        key: Keyword,
    },
    /// `=` with nothing before it.
    #[error("missing keyword before \"=\" at byte {offset} of the connection string")]
    MissingKeyword {
        /// Byte offset.
        offset: usize,
    },
    /// A single-quoted value without its closing quote.
    #[error("unterminated quoted value for keyword {key} in the connection string — close it with ' and escape quotes inside as \\'")]
    UnterminatedQuote {
        /// The keyword (shown only when it is a libpq keyword).
        key: Keyword,
    },
    /// A keyword libpq does not know.
    #[error("invalid connection option {key} — see https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-PARAMKEYWORDS")]
    UnknownOption {
        /// The keyword (shown only when it is a libpq keyword, which it is not).
        key: Keyword,
    },
    /// A libpq keyword blueshift does not support.
    #[error("connection option \"{key}\" is not supported by blueshift — {fix}")]
    UnsupportedOption {
        /// The keyword.
        key: &'static str,
        /// What to do instead.
        fix: &'static str,
    },
    /// A value that does not parse.
    #[error("invalid value {value:?} for {key}: expected {expected}")]
    InvalidValue {
        /// The keyword or environment variable.
        key: &'static str,
        /// The value (never of a password).
        value: String,
        /// What would be accepted.
        expected: &'static str,
    },
    /// A value PostgreSQL cannot receive.
    #[error("the value of {key} contains a NUL byte, which PostgreSQL cannot accept")]
    NulByte {
        /// The setting.
        key: &'static str,
    },
    /// A comma-separated host or port list.
    #[error(
        "several hosts in one connection string are not supported — give a single host and port"
    )]
    MultipleHosts,
    /// An `sslmode` that needs TLS.
    #[error("sslmode={sslmode} needs TLS, which blueshift does not support yet — use sslmode=disable or sslmode=prefer (no TLS), or reach the server over a Unix socket or an SSH tunnel")]
    TlsNotSupported {
        /// The requested mode.
        sslmode: SslMode,
    },
}

/// Everything needed to open a replication connection.
///
/// `Debug` redacts the password; `Display` is the target without it, for logs:
/// `user@host:port/dbname`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectConfig {
    host: Host,
    port: u16,
    user: String,
    password: Option<Password>,
    dbname: String,
    application_name: Option<String>,
    options: Option<String>,
    connect_timeout: Option<Duration>,
    sslmode: SslMode,
    passfile: Option<PathBuf>,
}

impl ConnectConfig {
    /// Parses a connection string with the process environment as fallback.
    pub fn from_conninfo(conninfo: &str) -> Result<ConnectConfig, ConfigError> {
        Self::from_conninfo_with_env(conninfo, |name| std::env::var(name).ok())
    }

    /// Parses a connection string; `env` answers for the `PG*` variables, `USER`, `LOGNAME` and
    /// `HOME`.
    pub fn from_conninfo_with_env(
        conninfo: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ConnectConfig, ConfigError> {
        let mut given = Given::default();
        for setting in conninfo::parse(conninfo)? {
            given.set(setting)?;
        }
        Self::resolve(given, &|name| env(name).filter(|v| !v.is_empty()))
    }

    fn resolve(
        given: Given,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ConnectConfig, ConfigError> {
        let pick = |value: Option<String>, var: &str| value.or_else(|| env(var));

        let port = match (given.port, env("PGPORT")) {
            (Some(port), _) => parse_port("port", &port)?,
            (None, Some(port)) => parse_port("PGPORT", &port)?,
            (None, None) => DEFAULT_PORT,
        };
        let host = match (given.host, env("PGHOST")) {
            (Some(host), _) => parse_host("host", host)?,
            (None, Some(host)) => parse_host("PGHOST", host)?,
            (None, None) => Host::Unix(default_socket_dir()),
        };
        let user = pick(given.user, "PGUSER")
            .or_else(|| env("USER"))
            .or_else(|| env("LOGNAME"))
            .unwrap_or_else(|| FALLBACK_USER.to_owned());
        let dbname = pick(given.dbname, "PGDATABASE").unwrap_or_else(|| user.clone());
        let password = pick(given.password, "PGPASSWORD").map(Password);
        let passfile = pick(given.passfile, "PGPASSFILE")
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|home| Path::new(&home).join(".pgpass")));
        let application_name =
            pick(given.application_name, "PGAPPNAME").or(given.fallback_application_name);
        let options = pick(given.options, "PGOPTIONS");
        let connect_timeout = match (given.connect_timeout, env("PGCONNECT_TIMEOUT")) {
            (Some(t), _) => parse_connect_timeout("connect_timeout", &t)?,
            (None, Some(t)) => parse_connect_timeout("PGCONNECT_TIMEOUT", &t)?,
            (None, None) => None,
        };
        let sslmode = match (given.sslmode, env("PGSSLMODE")) {
            (Some(mode), _) => parse_sslmode("sslmode", mode)?,
            (None, Some(mode)) => parse_sslmode("PGSSLMODE", mode)?,
            (None, None) => SslMode::default(),
        };
        if sslmode.requires_tls() {
            return Err(ConfigError::TlsNotSupported { sslmode });
        }
        let texts = [
            ("user", Some(user.as_str())),
            ("dbname", Some(dbname.as_str())),
            ("password", password.as_ref().map(Password::expose)),
            ("application_name", application_name.as_deref()),
            ("options", options.as_deref()),
        ];
        if let Some((key, _)) = texts
            .into_iter()
            .find(|(_, text)| text.is_some_and(|t| t.contains('\0')))
        {
            return Err(ConfigError::NulByte { key });
        }
        Ok(ConnectConfig {
            host,
            port,
            user,
            password,
            dbname,
            application_name,
            options,
            connect_timeout,
            sslmode,
            passfile,
        })
    }

    /// Where the server listens.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The TCP port, or the number in the Unix socket's name.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The role to log in as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The database the replication connection is bound to (`replication=database`).
    pub fn dbname(&self) -> &str {
        &self.dbname
    }

    /// The password given in the connection string or `PGPASSWORD`, if any. The password file
    /// is consulted later, at connect time; see [`ConnectConfig::password_for_auth`].
    pub fn password(&self) -> Option<&Password> {
        self.password.as_ref()
    }

    /// `application_name`, shown in `pg_stat_replication`.
    pub fn application_name(&self) -> Option<&str> {
        self.application_name.as_deref()
    }

    /// Command-line options for the server process (`-c name=value ...`).
    pub fn options(&self) -> Option<&str> {
        self.options.as_deref()
    }

    /// How long connecting (including authentication) may take; `None` waits forever.
    pub fn connect_timeout(&self) -> Option<Duration> {
        self.connect_timeout
    }

    /// The requested `sslmode` (always one that connects without TLS).
    pub fn sslmode(&self) -> SslMode {
        self.sslmode
    }

    /// The password file consulted when the server asks for a password and none was given.
    pub fn passfile(&self) -> Option<&Path> {
        self.passfile.as_deref()
    }

    /// Sets the password.
    pub fn set_password(&mut self, password: Password) -> &mut Self {
        self.password = Some(password);
        self
    }

    /// Sets `application_name`.
    pub fn set_application_name(&mut self, name: impl Into<String>) -> &mut Self {
        self.application_name = Some(name.into());
        self
    }

    /// Sets `application_name` unless one was configured.
    pub fn set_fallback_application_name(&mut self, name: impl Into<String>) -> &mut Self {
        if self.application_name.is_none() {
            self.application_name = Some(name.into());
        }
        self
    }

    /// Sets the server options (`-c wal_sender_timeout=10s`).
    pub fn set_options(&mut self, options: impl Into<String>) -> &mut Self {
        self.options = Some(options.into());
        self
    }

    /// Sets the connect timeout; `None` waits forever.
    pub fn set_connect_timeout(&mut self, timeout: Option<Duration>) -> &mut Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the password file.
    pub fn set_passfile(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.passfile = Some(path.into());
        self
    }

    /// The password to answer an authentication request with: the configured one, else the
    /// password file's entry for this host (`localhost` for a Unix socket), port, database and
    /// user.
    pub fn password_for_auth(&self) -> Option<Password> {
        if let Some(password) = &self.password {
            return Some(password.clone());
        }
        let path = self.passfile.as_deref()?;
        let host = match &self.host {
            Host::Tcp(name) => name.as_str(),
            Host::Unix(_) => "localhost",
        };
        pgpass::lookup(
            path,
            pgpass::Entry {
                host,
                port: self.port,
                dbname: &self.dbname,
                user: &self.user,
            },
        )
    }

    /// The Unix socket file for a [`Host::Unix`] host.
    pub fn socket_path(&self) -> Option<PathBuf> {
        match &self.host {
            Host::Unix(dir) => Some(dir.join(format!(".s.PGSQL.{}", self.port))),
            Host::Tcp(_) => None,
        }
    }
}

impl fmt::Display for ConnectConfig {
    /// `user@host:port/dbname`, without the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}:{}/{}",
            self.user, self.host, self.port, self.dbname
        )
    }
}

/// The settings found in the connection string, before fallbacks. Later settings override
/// earlier ones, as in libpq.
#[derive(Default)]
struct Given {
    host: Option<String>,
    port: Option<String>,
    user: Option<String>,
    password: Option<String>,
    dbname: Option<String>,
    application_name: Option<String>,
    fallback_application_name: Option<String>,
    options: Option<String>,
    connect_timeout: Option<String>,
    sslmode: Option<String>,
    passfile: Option<String>,
}

impl Given {
    fn set(&mut self, setting: conninfo::Setting) -> Result<(), ConfigError> {
        // An empty value means "not set", so the environment and defaults still apply.
        let value = Some(setting.value).filter(|v| !v.is_empty());
        let slot = match setting.key.as_str() {
            "host" => &mut self.host,
            "port" => &mut self.port,
            "user" => &mut self.user,
            "password" => &mut self.password,
            "dbname" => &mut self.dbname,
            "application_name" => &mut self.application_name,
            "fallback_application_name" => &mut self.fallback_application_name,
            "options" => &mut self.options,
            "connect_timeout" => &mut self.connect_timeout,
            "sslmode" => &mut self.sslmode,
            "passfile" => &mut self.passfile,
            "replication" => {
                return Err(ConfigError::UnsupportedOption {
                    key: "replication",
                    fix: "remove it; blueshift always connects with replication=database",
                })
            }
            "hostaddr" => {
                return Err(ConfigError::UnsupportedOption {
                    key: "hostaddr",
                    fix: "put the IP address in host instead",
                })
            }
            "client_encoding"
                if value
                    .as_deref()
                    .is_none_or(|v| v.eq_ignore_ascii_case("utf8")) =>
            {
                // blueshift always asks for UTF8.
                return Ok(());
            }
            key => {
                let keyword = Keyword::new(key, setting.offset);
                return Err(match keyword.known() {
                    Some(known) => ConfigError::UnsupportedOption {
                        key: known,
                        fix: "remove it from the connection string",
                    },
                    None => ConfigError::UnknownOption { key: keyword },
                });
            }
        };
        *slot = value;
        Ok(())
    }
}

fn parse_port(key: &'static str, value: &str) -> Result<u16, ConfigError> {
    if value.contains(',') {
        return Err(ConfigError::MultipleHosts);
    }
    value
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| ConfigError::InvalidValue {
            key,
            value: value.to_owned(),
            expected: "a port number from 1 to 65535",
        })
}

fn parse_host(key: &'static str, value: String) -> Result<Host, ConfigError> {
    if value.contains(',') {
        return Err(ConfigError::MultipleHosts);
    }
    if value.starts_with('/') {
        Ok(Host::Unix(PathBuf::from(value)))
    } else if value.starts_with('@') {
        Err(ConfigError::InvalidValue {
            key,
            value,
            expected: "a host name, an IP address or a socket directory starting with '/' (abstract Unix sockets are not supported)",
        })
    } else {
        Ok(Host::Tcp(value))
    }
}

fn parse_connect_timeout(key: &'static str, value: &str) -> Result<Option<Duration>, ConfigError> {
    let secs: i64 = value
        .trim()
        .parse()
        .map_err(|_| ConfigError::InvalidValue {
            key,
            value: value.to_owned(),
            expected: "a whole number of seconds (0 waits forever)",
        })?;
    Ok(u64::try_from(secs)
        .ok()
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(s.max(MIN_CONNECT_TIMEOUT_SECS))))
}

fn parse_sslmode(key: &'static str, value: String) -> Result<SslMode, ConfigError> {
    value.parse().map_err(|()| ConfigError::InvalidValue {
        key,
        value,
        expected: "one of disable, allow, prefer, require, verify-ca, verify-full",
    })
}

/// `/var/run/postgresql` when it exists (Debian's libpq), else `/tmp`.
fn default_socket_dir() -> PathBuf {
    let debian = Path::new(DEBIAN_SOCKET_DIR);
    if debian.is_dir() {
        debian.to_path_buf()
    } else {
        PathBuf::from(FALLBACK_SOCKET_DIR)
    }
}

#[cfg(test)]
mod tests;
