//! `blueshift migrate`: versioned schema migrations on one database (usually green). Parses the
//! arguments into a `MigrateConfig` and the connection settings, runs one command of the
//! engine's `Migrator`, and prints what happened.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use blueshift_decoder::config::ConnectConfig;

use crate::settings;
use blueshift_engine::client;
use blueshift_engine::migrate::{
    scaffold, Direction, LockWait, MigrateConfig, Migrator, Repair, Run, State, Status, Version,
};
use serde_json::json;

/// Versioned schema migrations (`V<version>__<description>.sql`) on a database.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  blueshift migrate new \"add users email\"
  export DATABASE_URL=postgresql://app@green.internal:5432/app
  blueshift migrate status
  blueshift migrate up --dry-run
  blueshift migrate up --lock-wait 30s --lock-timeout 5s")]
pub(crate) struct MigrateArgs {
    /// The database to migrate: a libpq URI or key=value string (default: --target, then
    /// BLUESHIFT_TARGET, then the --config file's `target`). Prefer PGPASSWORD or ~/.pgpass
    /// to a password in the URI.
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        global = true,
        value_name = "URI"
    )]
    database: Option<String>,

    /// The TOML settings file every command reads (its `target` and `target_password_file`).
    #[arg(long, value_name = "FILE", env = "BLUESHIFT_CONFIG", global = true)]
    config: Option<PathBuf>,

    /// Green: the database to migrate when --database is not given.
    #[arg(
        long,
        value_name = "URI",
        env = "BLUESHIFT_TARGET",
        hide_env_values = true,
        global = true
    )]
    target: Option<String>,

    /// File holding the database's password (its first line).
    #[arg(
        long,
        value_name = "FILE",
        env = "BLUESHIFT_TARGET_PASSWORD_FILE",
        global = true
    )]
    target_password_file: Option<PathBuf>,

    /// The folder of `V<version>__<description>.sql` scripts (and their `.down.sql`).
    #[arg(long, default_value = "migrations", global = true, value_name = "DIR")]
    dir: PathBuf,

    /// How long to wait for another run's migration lock: `forever`, or a duration such as
    /// `30s`, `5m`; `0s` fails at once.
    #[arg(long, default_value = "forever", global = true, value_name = "DURATION", value_parser = parse_lock_wait)]
    lock_wait: LockWait,

    /// `lock_timeout` for migration statements: how long one may queue for a table lock behind
    /// other sessions before it fails (`0s`: no limit).
    #[arg(long, default_value = "2s", global = true, value_name = "DURATION", value_parser = parse_duration)]
    lock_timeout: Duration,

    #[command(subcommand)]
    command: MigrateCommand,
}

#[derive(Debug, clap::Subcommand)]
enum MigrateCommand {
    /// Show every version: applied, pending, changed-on-disk, missing-on-disk, failed, baseline.
    #[command(
        after_help = "Example:\n  blueshift migrate status --database postgresql://app@green:5432/app --dir migrations"
    )]
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Apply the pending migrations, each in its own transaction.
    #[command(
        after_help = "Examples:\n  blueshift migrate up --dry-run\n  blueshift migrate up --to 12 --database postgresql://app@green:5432/app"
    )]
    Up {
        /// Stop after this version (inclusive).
        #[arg(long, value_name = "VERSION", value_parser = clap::value_parser!(i64).range(1..))]
        to: Option<i64>,
        /// Print the plan and run nothing; the database is not touched.
        #[arg(long)]
        dry_run: bool,
    },
    /// Revert applied migrations with their down scripts (by default only the newest).
    #[command(
        after_help = "Examples:\n  blueshift migrate down              # revert the newest migration\n  blueshift migrate down --to 3       # revert everything above V3\n  blueshift migrate down --to 0 --dry-run"
    )]
    Down {
        /// Revert every version above this one (0: all).
        #[arg(long, value_name = "VERSION", value_parser = clap::value_parser!(i64).range(0..))]
        to: Option<i64>,
        /// Print the plan and run nothing; the database is not touched.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check that applied scripts still match their files; fails when one changed or is missing.
    #[command(after_help = "Example:\n  blueshift migrate validate --dir migrations")]
    Validate,
    /// After a reviewed edit: record the new checksums, forget scripts removed from disk, clear
    /// failed rows.
    #[command(after_help = "Example:\n  blueshift migrate validate || blueshift migrate repair")]
    Repair,
    /// Adopt an existing database: scripts up to VERSION count as applied.
    #[command(
        after_help = "Example:\n  blueshift migrate baseline --version 7 --description \"schema as of the 2024 dump\""
    )]
    Baseline {
        /// The version the database is at.
        #[arg(long, value_name = "VERSION", value_parser = clap::value_parser!(i64).range(1..))]
        version: i64,
        /// What the baseline is.
        #[arg(long, default_value = "baseline")]
        description: String,
    },
    /// Create the next `V<version>__<description>.sql` and its `.down.sql`.
    #[command(
        after_help = "Example:\n  blueshift migrate new \"add users email\"   # V4__add_users_email.sql + .down.sql"
    )]
    New {
        /// What the migration does; becomes the file name.
        description: String,
    },
    /// Show the audit in blueshift.schema_history.
    #[command(after_help = "Example:\n  blueshift migrate history --limit 20")]
    History {
        /// How many of the latest entries.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

pub(crate) async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let config = MigrateConfig {
        dir: args.dir,
        lock_wait: args.lock_wait,
        lock_timeout: args.lock_timeout,
    };
    if let MigrateCommand::New { description } = &args.command {
        let (up, down) = scaffold(&config.dir, description)?;
        println!("created {}", up.display());
        println!("created {}", down.display());
        return Ok(());
    }
    let file = settings::ConfigArg {
        config: args.config.clone(),
    }
    .load()?;
    let target = settings::TargetArgs {
        target: args.target.clone(),
        target_password_file: args.target_password_file.clone(),
    };
    let connect =
        match &args.database {
            Some(conninfo) => {
                let mut connect = crate::source::parse("--database", conninfo)?;
                if let Some(path) = target
                    .target_password_file
                    .as_deref()
                    .or(file.target_password_file.as_deref())
                {
                    connect.set_password(settings::read_password(path)?);
                }
                connect
            }
            None if target.given(&file) => target.resolve(&file)?,
            None => return Err(anyhow::Error::new(crate::exit::Refused(
                "no database given — pass --database URI (or --target URI), or set DATABASE_URL \
                 or BLUESHIFT_TARGET, or target = \"…\" in the --config file"
                    .to_owned(),
            ))),
        };
    let migrator = Migrator::new(config);
    let (mut client, connection) = client::connect(&connect, "blueshift migrate").await?;
    let result = command(&migrator, &mut client, args.command, &connect).await;
    drop(client);
    let _ = connection.await;
    result
}

async fn command(
    migrator: &Migrator,
    client: &mut tokio_postgres::Client,
    command: MigrateCommand,
    target: &ConnectConfig,
) -> anyhow::Result<()> {
    match command {
        MigrateCommand::New { .. } => unreachable!("handled before connecting"),
        MigrateCommand::Status { json } => {
            let status = migrator.status(client).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status_json(&status))?);
            } else {
                print_status(&status, target, migrator);
            }
        }
        MigrateCommand::Validate => {
            let status = migrator.validate(client).await?;
            let applied = status
                .entries
                .iter()
                .filter(|e| e.state == State::Applied)
                .count();
            println!(
                "ok: {applied} applied migration(s) match their files; {} pending",
                status.pending(None).len()
            );
        }
        MigrateCommand::Up { to, dry_run } => {
            let to = to.and_then(Version::new);
            let run = migrator.up(client, to, dry_run).await?;
            print_run(&run);
        }
        MigrateCommand::Down { to, dry_run } => {
            let run = migrator.down(client, to, dry_run).await?;
            print_run(&run);
        }
        MigrateCommand::Repair => {
            let repairs = migrator.repair(client).await?;
            if repairs.is_empty() {
                println!("nothing to repair");
            }
            for r in &repairs {
                match r {
                    Repair::Realigned {
                        version,
                        description,
                        old_checksum,
                        new_checksum,
                    } => println!(
                        "realigned {version} {description:?}: checksum {old_checksum} -> {new_checksum}"
                    ),
                    Repair::Removed {
                        version,
                        description,
                        was,
                    } => println!("removed {version} {description:?} ({was}): it counts as not applied"),
                }
            }
            // What repair cannot fix (scripts out of order) still fails here.
            migrator.validate(client).await?;
        }
        MigrateCommand::Baseline {
            version,
            description,
        } => {
            let version = Version::new(version).context("the version must be at least 1")?;
            migrator.baseline(client, version, &description).await?;
            println!("baseline {version} recorded: scripts up to {version} count as applied");
        }
        MigrateCommand::History { limit } => {
            let rows = migrator.history(client, limit).await?;
            if rows.is_empty() {
                println!("no history yet");
            }
            for h in rows {
                let version = h.version.map(|v| format!("V{v}")).unwrap_or_default();
                println!(
                    "{:>5}  {}  {:<8} {:<7} {:<6} {:?} by {}{}{}",
                    h.id,
                    h.performed_at,
                    h.action,
                    h.outcome,
                    version,
                    h.description.unwrap_or_default(),
                    h.performed_by,
                    h.client.map(|c| format!(" ({c})")).unwrap_or_default(),
                    h.detail.map(|d| format!(": {d}")).unwrap_or_default(),
                );
            }
        }
    }
    Ok(())
}

fn print_status(status: &Status, target: &ConnectConfig, migrator: &Migrator) {
    let current = status
        .current()
        .map_or_else(|| "no version".to_owned(), |v| v.to_string());
    let pending = status.pending(None).len();
    println!(
        "{target}: at {current}, {pending} pending (scripts in {})",
        migrator.config().dir.display()
    );
    if !status.initialized {
        println!("blueshift.schema_version does not exist yet: nothing applied");
    }
    println!(
        "{:<8} {:<16} {:<21} DESCRIPTION",
        "VERSION", "STATE", "APPLIED AT"
    );
    for e in &status.entries {
        println!(
            "{:<8} {:<16} {:<21} {}",
            e.version.to_string(),
            e.state.as_str(),
            e.applied
                .as_ref()
                .map(|a| a.applied_at.as_str())
                .unwrap_or(""),
            e.description
        );
    }
    let problems = status.problems();
    if !problems.is_empty() {
        println!(
            "{} problem(s): `blueshift migrate up` refuses to run until they are resolved \
             (see `blueshift migrate validate`)",
            problems.len()
        );
    }
}

fn status_json(status: &Status) -> serde_json::Value {
    let entries: Vec<_> = status
        .entries
        .iter()
        .map(|e| {
            json!({
                "version": e.version.get(),
                "description": e.description,
                "state": e.state.as_str(),
                "script": e.script.as_ref().map(|s| s.name.clone()),
                "checksum_on_disk": e.script.as_ref().map(|s| s.checksum.clone()),
                "checksum_applied": e.applied.as_ref().map(|a| a.checksum.clone()),
                "applied_at": e.applied.as_ref().map(|a| a.applied_at.clone()),
                "applied_by": e.applied.as_ref().map(|a| a.applied_by.clone()),
                "execution_ms": e.applied.as_ref().map(|a| a.execution_ms),
            })
        })
        .collect();
    json!({
        "initialized": status.initialized,
        "current": status.current().map(Version::get),
        "pending": status.pending(None).len(),
        "problems": status.problems().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "migrations": entries,
    })
}

fn print_run(run: &Run) {
    let name = |v: Option<Version>| v.map_or_else(|| "no version".to_owned(), |v| v.to_string());
    let from = name(run.from);
    if run.dry_run {
        println!("dry run: nothing runs and the database is not changed");
    }
    if run.steps.is_empty() {
        println!("nothing to do: the database is at {from}");
        return;
    }
    for s in &run.steps {
        let verb = match (s.direction, run.dry_run) {
            (Direction::Up, false) => "applied",
            (Direction::Up, true) => "would apply",
            (Direction::Down, false) => "reverted",
            (Direction::Down, true) => "would revert",
        };
        let how = if s.transactional {
            "in a transaction"
        } else {
            "outside a transaction (blueshift:no-transaction)"
        };
        let time = s
            .execution_ms
            .map(|ms| format!(", {ms} ms"))
            .unwrap_or_default();
        println!(
            "{verb} {} {:?} from {} ({} statement(s), {how}{time})",
            s.version,
            s.description,
            s.path.display(),
            s.statements
        );
    }
    let to = name(run.to);
    if run.dry_run {
        println!("the database would go from {from} to {to}");
    } else {
        println!("the database went from {from} to {to}");
    }
}

/// `forever`, or a duration.
fn parse_lock_wait(s: &str) -> Result<LockWait, String> {
    match s {
        "forever" | "infinite" | "inf" => Ok(LockWait::Forever),
        _ => parse_duration(s).map(LockWait::Bounded),
    }
}

/// `500ms`, `2s`, `5m`, `1h`; a bare number is seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: write e.g. 500ms, 2s, 5m or 1h"))?;
    let ms = match unit.trim() {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" | "min" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?}: use ms, s, m or h"
            ))
        }
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(parse_lock_wait("forever"), Ok(LockWait::Forever));
        assert_eq!(parse_lock_wait("0s"), Ok(LockWait::Bounded(Duration::ZERO)));
    }
}
