//! Preflight: every check before anything changes. Each problem is named with its fix; the
//! cutover starts only when there is none.
//!
//! - the sync runs (its slot is active) and its lag is under `--max-lag`, and `status` sees no
//!   problem with the slot;
//! - the last `verify` of this slot and publication is clean, recent and compared every
//!   published table ([`super::gate`]), or `--skip-verify`;
//! - no transaction on blue is older than the pause budget (PgBouncer's `PAUSE` waits for it);
//! - green can take the reverse path: `wal_level = logical` and a free replication slot;
//! - PgBouncer's admin console answers and has the database entry, which points at blue, and
//!   the file to rewrite holds it (or a `--switch-command` is given);
//! - blue's database has no `default_transaction_read_only` of its own (the fence sets and
//!   resets it);
//! - blue's sequences can be read.

use std::time::Duration;

use tokio_postgres::Client;

use super::bouncer::Admin;
use super::error::CutoverError;
use super::switch::Switch;
use super::{entry, fence, gate, CutoverOptions};
use crate::status::{self, StatusOptions};

/// What preflight measured, for the plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Preflight {
    /// Problems found (the cutover is refused unless empty).
    pub problems: Vec<String>,
    /// Warnings (the cutover goes on).
    pub warnings: Vec<String>,
    /// The sync's lag in seconds, when known.
    pub lag_seconds: Option<f64>,
    /// The bytes green is behind.
    pub lag_bytes: Option<u64>,
    /// The oldest transaction on blue, in seconds.
    pub oldest_transaction: f64,
    /// Sessions on blue that do not come through PgBouncer (listed now; terminated at the
    /// fence with --terminate-direct-sessions).
    pub direct_sessions: Vec<String>,
    /// The entry's connection string now (pointing at blue).
    pub blue_entry: Option<String>,
}

impl Preflight {
    /// The pause this cutover is expected to take: the sync's lag to drain, PgBouncer's wait
    /// for the oldest transaction, and the round trips of the steps.
    pub fn estimated_pause(&self) -> Duration {
        let lag = self.lag_seconds.unwrap_or(0.0).max(0.0);
        Duration::from_secs_f64(lag + self.oldest_transaction.max(0.0) + 0.05)
    }
}

pub(crate) async fn run(
    options: &CutoverOptions,
    blue: &Client,
    green: &Client,
    admin: Option<&Admin>,
) -> Result<Preflight, CutoverError> {
    let mut p = Preflight::default();
    // The sync and its lag.
    match status::status(&StatusOptions {
        source: options.source.clone(),
        target: options.target.clone(),
        slot: options.slot.clone(),
    })
    .await
    {
        Ok(s) => {
            if !s.slot.active {
                p.problems.push(format!(
                    "replication slot {:?} is not streaming: start `blueshift sync` and let it catch up",
                    options.slot
                ));
            }
            p.lag_seconds = s.lag_seconds;
            p.lag_bytes = s.lag_bytes;
            match s.lag_seconds {
                Some(lag) if lag > options.max_lag.as_secs_f64() => p.problems.push(format!(
                    "the sync is {lag:.2} s behind, more than --max-lag {:.2} s: wait for it to catch up",
                    options.max_lag.as_secs_f64()
                )),
                Some(_) => {}
                None => p.problems.push(
                    "the sync's lag is unknown (no heartbeat in blueshift.sync_lag on green): run `blueshift sync` of this version".to_owned(),
                ),
            }
            p.problems.extend(s.problems);
        }
        Err(e) => p
            .problems
            .push(format!("cannot read the sync's status: {e}")),
    }
    // The verify gate.
    let verify_gate = gate::Gate {
        slot: &options.slot,
        publication: &options.publication,
        max_age: options.max_verify_age,
        skip: options.skip_verify,
    };
    let verdict = gate::check(&verify_gate, blue, green).await?;
    p.problems.extend(verdict.problem);
    p.warnings.extend(verdict.warning);
    if options.skip_verify {
        p.warnings
            .push("--skip-verify: green was not checked against blue".to_owned());
    }
    // Long transactions on blue.
    let long = fence::long_transactions(blue, "blue", options.max_pause.as_secs_f64()).await?;
    for t in long {
        p.problems.push(format!(
            "on blue, {t}: PgBouncer's PAUSE would wait for it past --max-pause — end it first"
        ));
    }
    let oldest: Option<f64> = blue
        .query_one(
            "SELECT pg_catalog.max(pg_catalog.date_part('epoch', pg_catalog.now() - xact_start))
               FROM pg_catalog.pg_stat_activity
              WHERE datname = pg_catalog.current_database() AND backend_type = 'client backend'
                AND pid <> pg_catalog.pg_backend_pid()",
            &[],
        )
        .await
        .map_err(CutoverError::query("blue", "read pg_stat_activity"))?
        .get(0);
    p.oldest_transaction = oldest.unwrap_or(0.0);
    // The reverse path on green.
    let row = green
        .query_one(
            "SELECT pg_catalog.current_setting('wal_level'),
                    pg_catalog.current_setting('max_replication_slots')::pg_catalog.int4
                      - (SELECT pg_catalog.count(*) FROM pg_catalog.pg_replication_slots)::pg_catalog.int4",
            &[],
        )
        .await
        .map_err(CutoverError::query("green", "read wal_level and the replication slots"))?;
    let wal_level: String = row.get(0);
    let free_slots: i32 = row.get(1);
    if wal_level != "logical" {
        p.problems.push(format!(
            "green has wal_level = {wal_level}: the way back needs logical — set wal_level = logical on green and restart it"
        ));
    }
    if free_slots < 1 {
        p.problems.push(
            "green has no free replication slot for the way back: raise max_replication_slots on green".to_owned(),
        );
    }
    // Blue's own read-only setting.
    if let Some(setting) = fence::read_only_setting(blue, "blue").await? {
        p.problems.push(format!(
            "blue's database already has {setting}: the fence sets and resets it — reset it (ALTER DATABASE … RESET default_transaction_read_only) first"
        ));
    }
    // Sessions that bypass PgBouncer.
    if let Some(admin) = admin {
        let pooled = admin.server_pids().await?;
        for s in fence::direct_sessions(blue, "blue", &pooled).await? {
            p.direct_sessions.push(s.to_string());
        }
    }
    // PgBouncer and the switch.
    check_switch(options, admin, &mut p).await?;
    // Sequences.
    if let Err(e) = crate::sequence::check_readable(blue, &options.publication).await {
        p.problems.push(e.to_string());
    }
    Ok(p)
}

async fn check_switch(
    options: &CutoverOptions,
    admin: Option<&Admin>,
    p: &mut Preflight,
) -> Result<(), CutoverError> {
    let source = &options.source;
    if let (Some(admin), Some(pooler)) = (admin, options.pgbouncer.as_ref()) {
        let name = pooler.dbname();
        match admin.database(name).await? {
            None => p.problems.push(format!(
                "PgBouncer has no database entry {name:?} (SHOW DATABASES): pass --pgbouncer with the database name clients use"
            )),
            Some(row) => {
                if row.port != source.port() || row.database != source.dbname() {
                    p.problems.push(format!(
                        "PgBouncer's entry {name:?} points at port {} database {:?}, not at blue (port {} database {:?}): is the cutover already done, or --source wrong?",
                        row.port,
                        row.database,
                        source.port(),
                        source.dbname()
                    ));
                }
                if row.paused {
                    p.warnings.push(format!(
                        "PgBouncer's entry {name:?} is paused already"
                    ));
                }
            }
        }
    }
    match &options.switch {
        Some(Switch::File { file, database }) => match entry::read(file, database) {
            Ok(value) => {
                match entry::endpoint_of(&value) {
                    Ok(e) if e.port == source.port() && e.dbname == source.dbname() => {}
                    Ok(e) => p.problems.push(format!(
                        "{}: entry {database:?} points at port {} database {:?}, not at blue",
                        file.display(),
                        e.port,
                        e.dbname
                    )),
                    Err(e) => p.problems.push(format!(
                        "{}: entry {database:?} cannot be read: {e}",
                        file.display()
                    )),
                }
                p.blue_entry = Some(value);
            }
            Err(e) => p.problems.push(e.to_string()),
        },
        Some(Switch::Command(_)) => {}
        None => p.problems.push(
            "nothing would switch the traffic: pass --pgbouncer-file (PgBouncer's file with the entry) or --switch-command".to_owned(),
        ),
    }
    Ok(())
}
