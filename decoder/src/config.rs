//! Connection settings of the replication connection, resolved the way libpq resolves them.
//!
//! A [`ConnectConfig`] comes from a connection string in either of libpq's forms
//! (<https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING>), with the
//! `PG*` environment variables as fallbacks
//! (<https://www.postgresql.org/docs/current/libpq-envars.html>) and the password file
//! (<https://www.postgresql.org/docs/current/libpq-pgpass.html>) consulted at connect time when
//! the server asks for a password and none was given. Precedence, highest first: the connection
//! string, the service it names (`service=` or `PGSERVICE`, from `pg_service.conf`), the
//! environment, the password file (password only), the defaults.
//!
//! The environment is passed in ([`ConnectConfig::from_conninfo_with_env`]) so callers and tests
//! never have to touch the process environment.
//!
//! The password lives in a [`Password`], which prints as `***`; the configuration's `Display` is
//! the redacted target (`postgres@127.0.0.1:5432/db`) for logs, and no [`ConfigError`] carries a
//! value that could be a password.

pub(crate) mod conninfo;
mod hosts;
pub(crate) mod pgpass;
mod service;
mod tls;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use conninfo::{Keyword, UriPart, UriProblem};
pub use hosts::{Pass, ServerState, TargetSessionAttrs};
pub use tls::{ChannelBinding, RootCert, SslMode, TlsSettings};

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
    /// A service named by `service=` or `PGSERVICE` is in no service file.
    #[error("definition of service \"{service}\" not found (looked in {searched}) — add a [{service}] section to ~/.pg_service.conf or the file named by PGSERVICEFILE, or fix the service name")]
    ServiceNotFound {
        /// The service.
        service: String,
        /// The files looked in.
        searched: String,
    },
    /// A service file that cannot be used.
    #[error("service file {path}: {problem}")]
    ServiceFile {
        /// The file.
        path: String,
        /// What is wrong, by line, never with a value.
        problem: String,
    },
    /// A port list that does not match the host list.
    #[error("could not match {ports} port numbers to {hosts} hosts — give one port for all the hosts, or one per host, in the same order")]
    HostPortMismatch {
        /// Hosts listed.
        hosts: usize,
        /// Ports listed.
        ports: usize,
    },
    /// `sslrootcert=system` with a mode that does not check the host name.
    #[error("weak sslmode \"{sslmode}\" may not be used with sslrootcert=system — use sslmode=verify-full (the default with sslrootcert=system), or name a root certificate file")]
    WeakSslModeForSystemRoots {
        /// The requested mode.
        sslmode: SslMode,
    },
    /// `channel_binding=require` with `sslmode=disable`: channel binding needs TLS.
    #[error("channel_binding=require cannot be met with sslmode=disable: channel binding needs TLS — use sslmode=require or stronger, or channel_binding=prefer")]
    ChannelBindingWithoutTls,
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
    tls: TlsSettings,
    passfile: Option<PathBuf>,
    /// The hosts after the first, tried in order when it fails (or does not suit).
    more_hosts: Vec<(Host, u16)>,
    target_session_attrs: TargetSessionAttrs,
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
        let env = |name: &str| env(name).filter(|v| !v.is_empty());
        let mut given = Given::default();
        let mut service = None;
        let mut after_password = false;
        for setting in conninfo::parse(conninfo)? {
            if setting.key == "service" {
                service = Some(setting.value).filter(|v| !v.is_empty());
                after_password = false;
                continue;
            }
            let is_password = matches!(setting.key.as_str(), "password" | "sslpassword");
            let (key, offset) = (setting.key.clone(), setting.offset);
            given.set(setting).map_err(|e| match e {
                // Name the keyword, unless it may be the rest of a password written unquoted
                // (`password=two words=…`).
                ConfigError::UnknownOption { .. } if !after_password => {
                    ConfigError::UnknownOption {
                        key: Keyword::shown(&key, offset),
                    }
                }
                e => e,
            })?;
            after_password = is_password;
        }
        // The service's settings are defaults for what the string leaves out.
        if let Some(name) = service.or_else(|| env("PGSERVICE")) {
            let mut from_service = Given::default();
            for setting in service::settings(&name, &env)? {
                from_service.set(setting)?;
            }
            given.fill_from(from_service);
        }
        Self::resolve(given, &env)
    }

    fn resolve(
        given: Given,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ConnectConfig, ConfigError> {
        let pick = |value: Option<String>, var: &str| value.or_else(|| env(var));

        let ports = match (given.port, env("PGPORT")) {
            (Some(ports), _) => parse_ports("port", &ports)?,
            (None, Some(ports)) => parse_ports("PGPORT", &ports)?,
            (None, None) => vec![DEFAULT_PORT],
        };
        let hosts = match (given.host, env("PGHOST")) {
            (Some(hosts), _) => parse_hosts("host", &hosts)?,
            (None, Some(hosts)) => parse_hosts("PGHOST", &hosts)?,
            (None, None) => vec![Host::Unix(default_socket_dir())],
        };
        let mut pairs: Vec<(Host, u16)> = match ports.as_slice() {
            [port] => hosts.into_iter().map(|h| (h, *port)).collect(),
            _ if ports.len() == hosts.len() => hosts.into_iter().zip(ports).collect(),
            _ => {
                return Err(ConfigError::HostPortMismatch {
                    hosts: hosts.len(),
                    ports: ports.len(),
                })
            }
        };
        // `split(',')` gives at least one entry, so there is a first host.
        let (host, port) = pairs.remove(0);
        let more_hosts = pairs;
        let target_session_attrs = match (given.target_session_attrs, env("PGTARGETSESSIONATTRS")) {
            (Some(v), _) => parse_target_session_attrs("target_session_attrs", v)?,
            (None, Some(v)) => parse_target_session_attrs("PGTARGETSESSIONATTRS", v)?,
            (None, None) => TargetSessionAttrs::Any,
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
        let home = env("HOME").map(PathBuf::from);
        let tls = given.tls.resolve(env, home.as_deref())?;
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
            tls,
            passfile,
            more_hosts,
            target_session_attrs,
        })
    }

    /// Every host to try, in order, with its port.
    pub fn hosts(&self) -> Vec<(Host, u16)> {
        std::iter::once((self.host.clone(), self.port))
            .chain(self.more_hosts.iter().cloned())
            .collect()
    }

    /// One configuration per host to try, in order, each with that host alone.
    pub fn candidates(&self) -> Vec<ConnectConfig> {
        self.hosts()
            .into_iter()
            .map(|(host, port)| ConnectConfig {
                host,
                port,
                more_hosts: Vec::new(),
                ..self.clone()
            })
            .collect()
    }

    /// `target_session_attrs`: which servers of [`hosts`](Self::hosts) suit.
    pub fn target_session_attrs(&self) -> TargetSessionAttrs {
        self.target_session_attrs
    }

    /// Where the server listens (the first host when several are listed).
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

    /// The requested `sslmode`.
    pub fn sslmode(&self) -> SslMode {
        self.tls.mode()
    }

    /// The TLS settings: `sslmode`, root and client certificates, SNI, channel binding.
    pub fn tls(&self) -> &TlsSettings {
        &self.tls
    }

    /// The TLS settings, to change them.
    pub fn tls_mut(&mut self) -> &mut TlsSettings {
        &mut self.tls
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

    /// Sets the database (PgBouncer's admin console is the database `pgbouncer` on the same
    /// listener as the pooled ones).
    pub fn set_dbname(&mut self, dbname: impl Into<String>) -> &mut Self {
        self.dbname = dbname.into();
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
    /// `user@host:port/dbname` (`user@a:5432,b:5433/dbname` with several hosts), without the
    /// password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:{}", self.user, self.host, self.port)?;
        for (host, port) in &self.more_hosts {
            write!(f, ",{host}:{port}")?;
        }
        write!(f, "/{}", self.dbname)
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
    tls: tls::GivenTls,
    passfile: Option<String>,
    target_session_attrs: Option<String>,
}

impl Given {
    /// Takes `other`'s value for every setting not given here.
    fn fill_from(&mut self, other: Given) {
        let Given {
            host,
            port,
            user,
            password,
            dbname,
            application_name,
            fallback_application_name,
            options,
            connect_timeout,
            tls,
            passfile,
            target_session_attrs,
        } = other;
        self.tls.fill_from(tls);
        for (mine, theirs) in [
            (&mut self.host, host),
            (&mut self.port, port),
            (&mut self.user, user),
            (&mut self.password, password),
            (&mut self.dbname, dbname),
            (&mut self.application_name, application_name),
            (
                &mut self.fallback_application_name,
                fallback_application_name,
            ),
            (&mut self.options, options),
            (&mut self.connect_timeout, connect_timeout),
            (&mut self.passfile, passfile),
            (&mut self.target_session_attrs, target_session_attrs),
        ] {
            if mine.is_none() {
                *mine = theirs;
            }
        }
    }

    fn set(&mut self, setting: conninfo::Setting) -> Result<(), ConfigError> {
        // An empty value means "not set", so the environment and defaults still apply.
        let value = Some(setting.value).filter(|v| !v.is_empty());
        if let Some(slot) = self.tls.slot(&setting.key) {
            *slot = value;
            return Ok(());
        }
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
            "passfile" => &mut self.passfile,
            "target_session_attrs" => &mut self.target_session_attrs,
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

/// A comma-separated port list; an empty entry is the default port.
fn parse_ports(key: &'static str, value: &str) -> Result<Vec<u16>, ConfigError> {
    value
        .split(',')
        .map(|p| {
            if p.trim().is_empty() {
                Ok(DEFAULT_PORT)
            } else {
                parse_port(key, p)
            }
        })
        .collect()
}

/// A comma-separated host list; an empty entry is the default socket folder.
fn parse_hosts(key: &'static str, value: &str) -> Result<Vec<Host>, ConfigError> {
    value
        .split(',')
        .map(|h| {
            if h.is_empty() {
                Ok(Host::Unix(default_socket_dir()))
            } else {
                parse_host(key, h.to_owned())
            }
        })
        .collect()
}

fn parse_target_session_attrs(
    key: &'static str,
    value: String,
) -> Result<TargetSessionAttrs, ConfigError> {
    value.parse().map_err(|()| ConfigError::InvalidValue {
        key,
        value,
        expected: "one of any, read-write, read-only, primary, standby, prefer-standby",
    })
}

fn parse_port(key: &'static str, value: &str) -> Result<u16, ConfigError> {
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
