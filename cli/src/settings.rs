//! One settings surface for every subcommand: the same `--config` file, the same `BLUESHIFT_*`
//! variables, the same password files and the same libpq settings, whichever command reads
//! them.
//!
//! A command takes the argument groups it needs ([`ConfigArg`], [`SourceArgs`],
//! [`TargetArgs`], [`SlotArg`]) with `#[command(flatten)]` and resolves them against the one
//! settings file ([`FileSettings`], read by [`load`]). The precedence is the same everywhere:
//!
//! 1. the command line;
//! 2. `BLUESHIFT_*` environment variables (`BLUESHIFT_SOURCE`, `BLUESHIFT_SLOT`, …);
//! 3. the `--config` TOML file (its keys are the long options with underscores);
//! 4. libpq's defaults, for what the connection string leaves out: `PGHOST`, `PGPORT`,
//!    `PGUSER`, `PGDATABASE`, `PGCONNECT_TIMEOUT`…, and for the password `PGPASSWORD`, then
//!    `~/.pgpass` (or `PGPASSFILE`). A password file (`--source-password-file`, …) wins over
//!    all of these.
//!
//! The file is shared: every command accepts every key (a `status --config sync.toml` reads
//! the sync's file and uses the keys it needs), and a key no command knows is refused by name.
//! Boolean variables take `1/true/yes/on` and `0/false/no/off`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use blueshift_decoder::config::{ConnectConfig, Host, Password};
use serde::Deserialize;

use crate::exit::Refused;
use crate::rename::{FileCast, FileExclude, FileMapping, FileRename};

/// The one settings file every command reads (`--config FILE`, TOML): the long options with
/// underscores, plus the mapping's `[[rename]]`, `[[exclude]]` and `[[cast]]` tables.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileSettings {
    pub(crate) source: Option<String>,
    pub(crate) target: Option<String>,
    pub(crate) source_password_file: Option<PathBuf>,
    pub(crate) target_password_file: Option<PathBuf>,
    pub(crate) publication: Option<String>,
    pub(crate) create_publication: Option<Vec<String>>,
    pub(crate) binary: Option<bool>,
    pub(crate) slot: Option<String>,
    pub(crate) workers: Option<usize>,
    pub(crate) metrics_addr: Option<SocketAddr>,
    /// `verify`: where a verify process serves its metrics — a key of its own, since the
    /// sidecar is listening on `metrics_addr` while verify runs.
    pub(crate) verify_metrics_addr: Option<SocketAddr>,
    pub(crate) max_txn_memory: Option<String>,
    pub(crate) spill_dir: Option<PathBuf>,
    /// As `--spool-limit`.
    pub(crate) spool_limit: Option<String>,
    pub(crate) queue_capacity: Option<usize>,
    /// `false`: as `blueshift sync --fold off`.
    pub(crate) fold: Option<bool>,
    /// `false`: as `blueshift sync --stream-apply off`.
    pub(crate) stream_apply: Option<bool>,
    pub(crate) stream_apply_max: Option<usize>,
    /// `false`: as `blueshift sync --pipelined-apply off`.
    pub(crate) pipelined_apply: Option<bool>,
    pub(crate) status_interval: Option<u64>,
    /// `true`: as --backfill; `false`: as --no-backfill.
    pub(crate) backfill: Option<bool>,
    pub(crate) copy_workers: Option<usize>,
    pub(crate) chunk_size: Option<String>,
    pub(crate) keep_indexes: Option<bool>,
    pub(crate) maintenance_work_mem: Option<String>,
    /// `/readyz` answers 503 while the lag is above this many seconds.
    pub(crate) ready_max_lag: Option<f64>,
    /// `cutover`: how clients reach the database through PgBouncer.
    pub(crate) pgbouncer: Option<String>,
    /// `cutover`: PgBouncer's file holding the database entry.
    pub(crate) pgbouncer_file: Option<PathBuf>,
    /// `cutover`: where PgBouncer reaches green.
    pub(crate) green_entry: Option<String>,
    /// `cutover`: the switch command.
    pub(crate) switch_command: Option<String>,
    /// `cutover`: the most lag preflight accepts (seconds).
    pub(crate) max_lag: Option<f64>,
    /// `cutover`: the oldest clean verify accepted (seconds).
    pub(crate) max_verify_age: Option<u64>,
    /// `cutover`: pass the verify gate without a verify.
    pub(crate) skip_verify: Option<bool>,
    /// `cutover`: the longest write pause (seconds).
    pub(crate) max_pause: Option<f64>,
    /// `cutover`: how long to watch after RESUME (seconds).
    pub(crate) watch: Option<f64>,
    /// `cutover`: the most rolled-back share of green's transactions while watching.
    pub(crate) max_error_rate: Option<f64>,
    /// `cutover`: terminate the sessions that bypass PgBouncer.
    pub(crate) terminate_direct_sessions: Option<bool>,
    #[serde(default)]
    pub(crate) rename: Vec<FileRename>,
    #[serde(default)]
    pub(crate) exclude: Vec<FileExclude>,
    #[serde(default)]
    pub(crate) cast: Vec<FileCast>,
    /// `true`: as `blueshift sync --bidirectional`.
    pub(crate) bidirectional: Option<bool>,
    /// `[reverse]`: the reverse direction of two-way sync (present: on, unless `enabled =
    /// false`).
    pub(crate) reverse: Option<FileReverse>,
}

/// The settings file's `[reverse]` table.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileReverse {
    /// Run the reverse direction (default when the table is present: true).
    pub(crate) enabled: Option<bool>,
    /// The conflict policy of every table not named below (as `--conflict-policy POLICY`).
    pub(crate) conflict_policy: Option<String>,
    /// `[reverse.conflict_policy_tables]`: `"schema.table" = "POLICY"`.
    #[serde(default)]
    pub(crate) conflict_policy_tables: std::collections::BTreeMap<String, String>,
    /// As `--sequence-strategy`: `offset` or `interleave`.
    pub(crate) sequence_strategy: Option<String>,
}

impl FileSettings {
    /// The declared column mapping: `[[rename]]`, `[[exclude]]` and `[[cast]]`.
    pub(crate) fn mapping(&self) -> FileMapping {
        FileMapping {
            rename: self.rename.clone(),
            exclude: self.exclude.clone(),
            cast: self.cast.clone(),
        }
    }
}

/// `--config`: the settings file.
#[derive(Debug, Default, Clone, clap::Args)]
pub(crate) struct ConfigArg {
    /// TOML settings file, the same for every command (keys: the long options with
    /// underscores, e.g. `source`, `slot`, `workers`; `[[rename]]` tables). The command line
    /// and BLUESHIFT_* variables win over it.
    #[arg(long, value_name = "FILE", env = "BLUESHIFT_CONFIG")]
    pub(crate) config: Option<PathBuf>,
}

impl ConfigArg {
    /// Reads the file, or the empty settings when none is given.
    pub(crate) fn load(&self) -> anyhow::Result<FileSettings> {
        match &self.config {
            Some(path) => load(path),
            None => Ok(FileSettings::default()),
        }
    }
}

/// What every command working on one sync's pair takes: `--config`, blue, green and the slot.
#[derive(Debug, Default, Clone, clap::Args)]
pub(crate) struct PairArgs {
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    slot: SlotArg,
}

/// [`PairArgs`] resolved: the settings file, both ends (checked distinct) and the slot.
pub(crate) struct Pair {
    pub(crate) file: FileSettings,
    pub(crate) source: ConnectConfig,
    pub(crate) target: ConnectConfig,
    pub(crate) slot: String,
}

impl PairArgs {
    /// Reads the file and resolves each setting (flag, then variable, then file); blue and
    /// green must differ.
    pub(crate) fn resolve(&self) -> anyhow::Result<Pair> {
        let file = self.config.load()?;
        let source = self.source.resolve(&file)?;
        let target = self.target.resolve(&file)?;
        ensure_distinct(&source, &target)?;
        let slot = self.slot.resolve(&file)?;
        Ok(Pair {
            file,
            source,
            target,
            slot,
        })
    }
}

/// Reads and checks the settings file at `path`; an unknown key is named.
pub(crate) fn load(path: &Path) -> anyhow::Result<FileSettings> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::Error::new(Refused(format!(
            "cannot read the settings file {}: {e} — check the --config path (or BLUESHIFT_CONFIG)",
            path.display()
        )))
    })?;
    parse(&text).map_err(|e| {
        anyhow::Error::new(Refused(format!(
            "invalid settings file {}: {} — the keys are the long options with underscores (see \
             `blueshift sync --help`)",
            path.display(),
            e.trim_end()
        )))
    })
}

fn parse(text: &str) -> Result<FileSettings, String> {
    toml::from_str::<FileSettings>(text).map_err(|e| e.to_string())
}

/// Blue: `--source` and its password file.
#[derive(Debug, Default, Clone, clap::Args)]
pub(crate) struct SourceArgs {
    /// Blue, the database replicated from: a libpq URI or key=value string; PG* variables,
    /// pg_service.conf and ~/.pgpass fill the gaps.
    #[arg(
        long,
        value_name = "URI",
        env = "BLUESHIFT_SOURCE",
        hide_env_values = true
    )]
    pub(crate) source: Option<String>,
    /// File holding blue's password (its first line).
    #[arg(long, value_name = "FILE", env = "BLUESHIFT_SOURCE_PASSWORD_FILE")]
    pub(crate) source_password_file: Option<PathBuf>,
}

impl SourceArgs {
    /// Blue's connection settings.
    pub(crate) fn resolve(&self, file: &FileSettings) -> anyhow::Result<ConnectConfig> {
        endpoint(
            "--source",
            "BLUESHIFT_SOURCE",
            "source",
            self.source.as_deref().or(file.source.as_deref()),
            self.source_password_file
                .as_deref()
                .or(file.source_password_file.as_deref()),
        )
    }
}

/// Green: `--target` and its password file.
#[derive(Debug, Default, Clone, clap::Args)]
pub(crate) struct TargetArgs {
    /// Green, the database replicated to: a libpq URI or key=value string; PG* variables,
    /// pg_service.conf and ~/.pgpass fill the gaps.
    #[arg(
        long,
        value_name = "URI",
        env = "BLUESHIFT_TARGET",
        hide_env_values = true
    )]
    pub(crate) target: Option<String>,
    /// File holding green's password (its first line).
    #[arg(long, value_name = "FILE", env = "BLUESHIFT_TARGET_PASSWORD_FILE")]
    pub(crate) target_password_file: Option<PathBuf>,
}

impl TargetArgs {
    /// Green's connection settings.
    pub(crate) fn resolve(&self, file: &FileSettings) -> anyhow::Result<ConnectConfig> {
        endpoint(
            "--target",
            "BLUESHIFT_TARGET",
            "target",
            self.target.as_deref().or(file.target.as_deref()),
            self.target_password_file
                .as_deref()
                .or(file.target_password_file.as_deref()),
        )
    }

    /// Whether a target was given on the command line, in the environment or in `file`.
    pub(crate) fn given(&self, file: &FileSettings) -> bool {
        self.target.is_some() || file.target.is_some()
    }
}

/// `--slot`.
#[derive(Debug, Default, Clone, clap::Args)]
pub(crate) struct SlotArg {
    /// The sync's logical replication slot on blue; its appliers' origins on green are
    /// blueshift_<slot>_<n> [default: blueshift].
    #[arg(long, value_name = "NAME", env = "BLUESHIFT_SLOT")]
    pub(crate) slot: Option<String>,
}

impl SlotArg {
    /// The slot: the flag, `BLUESHIFT_SLOT`, the file's `slot`, else `blueshift`.
    pub(crate) fn resolve(&self, file: &FileSettings) -> anyhow::Result<String> {
        let slot = self
            .slot
            .clone()
            .or_else(|| file.slot.clone())
            .unwrap_or_else(|| blueshift_engine::sync::DEFAULT_SLOT.to_owned());
        blueshift_decoder::connection::validate_slot_name(&slot)
            .map_err(|e| anyhow::Error::new(Refused(e.to_string())))?;
        Ok(slot)
    }
}

/// The settings of one side: the connection string (with the `PG*` environment as fallback) and
/// the password file.
fn endpoint(
    flag: &str,
    variable: &str,
    key: &str,
    conninfo: Option<&str>,
    password_file: Option<&Path>,
) -> anyhow::Result<ConnectConfig> {
    let conninfo = conninfo.ok_or_else(|| {
        anyhow::Error::new(Refused(format!(
            "no {key} database: pass {flag} URI (or set {variable}, or {key} = \"…\" in the \
             --config file)"
        )))
    })?;
    let mut config = crate::source::parse(flag, conninfo)?;
    if let Some(path) = password_file {
        config.set_password(read_password(path)?);
    }
    Ok(config)
}

/// The first line of a password file.
pub(crate) fn read_password(path: &Path) -> anyhow::Result<Password> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::Error::new(Refused(format!(
            "cannot read the password file {}: {e}",
            path.display()
        )))
    })?;
    let line = text.lines().next().unwrap_or_default();
    Ok(Password::new(line))
}

/// Refuses blue and green naming the same database (same host, port and database name once
/// resolved): a sync onto itself would apply every change twice.
pub(crate) fn ensure_distinct(
    source: &ConnectConfig,
    target: &ConnectConfig,
) -> anyhow::Result<()> {
    let same_host = match (source.host(), target.host()) {
        (Host::Tcp(a), Host::Tcp(b)) => a.eq_ignore_ascii_case(b),
        (Host::Unix(a), Host::Unix(b)) => a == b,
        _ => false,
    };
    if same_host && source.port() == target.port() && source.dbname() == target.dbname() {
        return Err(anyhow::Error::new(Refused(format!(
            "--source and --target are the same database ({}:{}/{}) — green must be another \
             database than blue: check the connection strings and the PG* variables that fill \
             them",
            source.host(),
            source.port(),
            source.dbname()
        ))));
    }
    Ok(())
}

/// A boolean flag that can also be set by a variable with any of `1/true/yes/on/0/false/no/off`.
pub(crate) fn boolish() -> clap::builder::BoolishValueParser {
    clap::builder::BoolishValueParser::new()
}

/// Context for a value that must be in a range.
pub(crate) fn in_range(
    option: &str,
    value: usize,
    range: std::ops::RangeInclusive<usize>,
) -> anyhow::Result<usize> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(anyhow::Error::new(Refused(format!(
            "{option} must be between {} and {}, not {value}",
            range.start(),
            range.end()
        ))))
    }
}

/// Parses a value with `f`, turning its error into a refusal that names the option.
pub(crate) fn parse_with<T>(
    option: &str,
    text: &str,
    f: impl FnOnce(&str) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    f(text)
        .with_context(|| format!("invalid {option}"))
        .map_err(|e| anyhow::Error::new(Refused(format!("{e:#}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_key_is_named() {
        let err = parse("source = \"host=a\"\nwrokers = 4\n").unwrap_err();
        assert!(err.contains("wrokers"), "{err}");
        let ok = parse("source = \"host=a\"\nslot = \"s\"\nworkers = 4\nready_max_lag = 30.0\n")
            .unwrap();
        assert_eq!(ok.slot.as_deref(), Some("s"));
    }

    #[test]
    fn the_same_database_is_refused() {
        let env = |_: &str| None;
        let a = ConnectConfig::from_conninfo_with_env("host=db port=5432 dbname=app", env).unwrap();
        let b = ConnectConfig::from_conninfo_with_env("host=DB port=5432 dbname=app", env).unwrap();
        let c =
            ConnectConfig::from_conninfo_with_env("host=db port=5432 dbname=app2", env).unwrap();
        let err = ensure_distinct(&a, &b).unwrap_err();
        assert!(format!("{err}").contains("same database"), "{err}");
        ensure_distinct(&a, &c).unwrap();
    }
}
