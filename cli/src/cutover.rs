//! `blueshift cutover`: moves traffic from blue to green through PgBouncer (or a switch
//! command), with the guardrails of [`blueshift_engine::cutover`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use blueshift_engine::cutover::{self, CutoverOptions, Switch};

use crate::exit::Refused;
use crate::rename::{self, RenameArgs};
use crate::settings;

/// Switch traffic from blue to green: PAUSE, fence blue, drain, copy sequences, switch, RESUME,
/// watch.
///
/// Preflight first (nothing changes): the sync streams with a lag under --max-lag, the last
/// `blueshift verify` is clean and recent (or --skip-verify), no transaction on blue is older
/// than --max-pause, green can take the way back, PgBouncer's admin console and entry are
/// found. --dry-run stops there and prints the plan with its estimated pause.
///
/// Then PgBouncer PAUSEs the database (clients queue, none fails), blue is made read-only for
/// every role but blueshift's, a fence marker goes into blue's WAL, green is drained up to it,
/// sequences are copied, PgBouncer's entry is re-pointed at green and RELOADed (or
/// --switch-command runs), and RESUME. Any failure before RESUME, or the pause reaching
/// --max-pause, rolls back automatically: blue writable, entry on blue, RESUME — clients saw a
/// pause, no error. The state is kept on green (blueshift.cutover); after a crash, --resume
/// finishes or rolls back. Without PgBouncer, --switch-command does the switch and the pause is
/// what the application's reconnect takes.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  # What would happen? (changes nothing)
  blueshift cutover --source \"$BLUE\" --target \"$GREEN\" --publication app_pub \\
      --pgbouncer 'postgresql://admin@pgbouncer:6432/app' \\
      --pgbouncer-file /etc/pgbouncer/databases.ini --dry-run

  # Cut over, at most 2 s of write pause, watch 2 minutes
  blueshift cutover --config /etc/blueshift/sync.toml --max-pause 2 --watch 120

  # Without PgBouncer: a DNS switch by script (gets BLUESHIFT_TARGET_HOST/_PORT/_DBNAME)
  blueshift cutover --config sync.toml --switch-command '/usr/local/bin/point-dns'

  # After a crash of blueshift mid-cutover
  blueshift cutover --config sync.toml --resume")]
pub(crate) struct CutoverArgs {
    #[command(flatten)]
    pair: settings::PairArgs,

    /// The sync's publication on blue: its tables' sequences are copied to green [default:
    /// blueshift].
    #[arg(long, value_name = "NAME", env = "BLUESHIFT_PUBLICATION")]
    publication: Option<String>,

    /// How clients reach the database through PgBouncer (a libpq URI; its database is the
    /// entry's name). The admin console is the `pgbouncer` database on the same listener.
    #[arg(
        long,
        value_name = "URI",
        env = "BLUESHIFT_PGBOUNCER_URI",
        hide_env_values = true
    )]
    pgbouncer: Option<String>,

    /// PgBouncer's file that holds the database entry (pgbouncer.ini, or the file it
    /// %includes): rewritten to point at green, then RELOAD.
    #[arg(long, value_name = "FILE", env = "BLUESHIFT_PGBOUNCER_FILE")]
    pgbouncer_file: Option<PathBuf>,

    /// Where PgBouncer reaches green, `host=… port=… dbname=…` [default: --target's].
    #[arg(long, value_name = "CONNINFO", env = "BLUESHIFT_GREEN_ENTRY")]
    green_entry: Option<String>,

    /// A shell command that switches the traffic instead of the file (DNS, HAProxy, a
    /// Kubernetes Service), run with BLUESHIFT_TARGET_HOST, BLUESHIFT_TARGET_PORT,
    /// BLUESHIFT_TARGET_DBNAME and BLUESHIFT_SWITCH_DIRECTION; exit 0 means switched.
    #[arg(long, value_name = "CMD", env = "BLUESHIFT_SWITCH_COMMAND")]
    switch_command: Option<String>,

    /// The most sync lag preflight accepts, in seconds [default: 1].
    #[arg(long, value_name = "SECONDS", env = "BLUESHIFT_MAX_LAG")]
    max_lag: Option<f64>,

    /// How old the last clean `blueshift verify` may be, in seconds [default: 3600].
    #[arg(long, value_name = "SECONDS", env = "BLUESHIFT_MAX_VERIFY_AGE")]
    max_verify_age: Option<u64>,

    /// Cut over without a clean verify (loudly warned): green is not checked against blue.
    #[arg(long, env = "BLUESHIFT_SKIP_VERIFY", value_parser = settings::boolish())]
    skip_verify: bool,

    /// The longest write pause, PAUSE to RESUME, in seconds; past it the cutover rolls back
    /// [default: 5].
    #[arg(long, value_name = "SECONDS", env = "BLUESHIFT_MAX_PAUSE")]
    max_pause: Option<f64>,

    /// How long to watch green after RESUME, in seconds [default: 60].
    #[arg(long, value_name = "SECONDS", env = "BLUESHIFT_WATCH")]
    watch: Option<f64>,

    /// The most rolled-back share of green's transactions during the watch [default: 0.01].
    #[arg(long, value_name = "RATIO", env = "BLUESHIFT_MAX_ERROR_RATE")]
    max_error_rate: Option<f64>,

    /// Terminate the sessions on blue that bypass PgBouncer, at the fence.
    #[arg(long, env = "BLUESHIFT_TERMINATE_DIRECT_SESSIONS", value_parser = settings::boolish())]
    terminate_direct_sessions: bool,

    /// Run preflight only and print the plan with its estimated pause.
    #[arg(long)]
    dry_run: bool,

    /// Resume a cutover that a crash of blueshift interrupted.
    #[arg(long)]
    resume: bool,
}

fn seconds(option: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        anyhow::Error::new(Refused(format!(
            "{option} must be a number of seconds, not {value}"
        )))
    })
}

/// What `cutover`, `rollback` and `finalize` do with the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Cutover,
    Rollback,
    Finalize,
}

pub(crate) async fn run(args: CutoverArgs) -> anyhow::Result<()> {
    run_action(args, Action::Cutover).await
}

pub(crate) async fn run_action(args: CutoverArgs, action: Action) -> anyhow::Result<()> {
    let settings::Pair {
        file,
        source,
        target,
        slot,
    } = args.pair.resolve()?;
    let mapping = rename::collect(file.mapping(), RenameArgs::default())?;
    let pgbouncer = match args.pgbouncer.or(file.pgbouncer.clone()) {
        Some(uri) => Some(crate::source::parse("--pgbouncer", &uri)?),
        None => None,
    };
    let switch = match (
        args.switch_command.or(file.switch_command.clone()),
        args.pgbouncer_file.or(file.pgbouncer_file.clone()),
    ) {
        (Some(command), _) => Some(Switch::Command(command)),
        (None, Some(path)) => {
            let Some(pooler) = &pgbouncer else {
                return Err(anyhow::Error::new(Refused(
                    "--pgbouncer-file needs --pgbouncer (how clients reach PgBouncer: its admin \
                     console RELOADs the file)"
                        .to_owned(),
                )));
            };
            Some(Switch::File {
                file: path,
                database: pooler.dbname().to_owned(),
            })
        }
        (None, None) => None,
    };
    let green_endpoint = match args.green_entry.or(file.green_entry.clone()) {
        Some(text) => cutover::parse_endpoint(&text)
            .map_err(|e| anyhow::Error::new(Refused(format!("invalid --green-entry: {e}"))))?,
        None => cutover::endpoint_of_config(&target),
    };
    let max_error_rate = args.max_error_rate.or(file.max_error_rate).unwrap_or(0.01);
    if !(0.0..=1.0).contains(&max_error_rate) {
        return Err(anyhow::Error::new(Refused(format!(
            "--max-error-rate is a ratio between 0 and 1, not {max_error_rate}"
        ))));
    }
    let options = CutoverOptions {
        source,
        target,
        slot,
        publication: args
            .publication
            .or(file.publication.clone())
            .unwrap_or_else(|| blueshift_engine::sync::DEFAULT_SLOT.to_owned()),
        renames: mapping.renames().clone(),
        pgbouncer,
        switch,
        green_endpoint,
        max_lag: seconds("--max-lag", args.max_lag.or(file.max_lag).unwrap_or(1.0))?,
        max_verify_age: Duration::from_secs(
            args.max_verify_age.or(file.max_verify_age).unwrap_or(3600),
        ),
        skip_verify: args.skip_verify || file.skip_verify.unwrap_or(false),
        max_pause: seconds(
            "--max-pause",
            args.max_pause.or(file.max_pause).unwrap_or(5.0),
        )?,
        watch: seconds("--watch", args.watch.or(file.watch).unwrap_or(60.0))?,
        max_error_rate,
        terminate_direct_sessions: args.terminate_direct_sessions
            || file.terminate_direct_sessions.unwrap_or(false),
        dry_run: args.dry_run,
        resume: args.resume,
    };
    let text = match action {
        Action::Cutover => cutover::cutover(&options)
            .await
            .context("blueshift cutover failed")?
            .to_string(),
        Action::Rollback => cutover::rollback(&options)
            .await
            .context("blueshift rollback failed")?
            .to_string(),
        Action::Finalize => cutover::finalize(&options)
            .await
            .context("blueshift finalize failed")?
            .to_string(),
    };
    crate::status::print(&text)
}
