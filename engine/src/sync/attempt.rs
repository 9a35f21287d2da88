//! One attempt of sync: connect everything, run the reader and the appliers until shutdown, an
//! error, or a stop position (see the parent module's docs).

use std::sync::Arc;
use std::time::Duration;

use blueshift_applier::{Applier, ApplierOptions, SynchronousCommit};
use blueshift_decoder::pgoutput::{PgOutputDecoder, ProtocolVersion};
use blueshift_decoder::Lsn;
use tokio::task::JoinSet;

use super::background::Background;
use super::order::CommitOrder;
use super::scheduler::Scheduler;
use super::writeset::KeyCatalog;
use super::{
    acknowledge, conflict_options, direction, durability, error_chain, heartbeat, hold, identity,
    loaded, monitor, reader, slot, spill_folder, spool, streamed, verified, worker, Shutdown,
    SyncConfig, SyncError, ORIGIN_PREFIX,
};
use crate::assembler::{AssemblerOptions, MemoryBudget, TxAssembler};
use crate::metrics::Metrics;
use crate::status::Side;
use crate::{backfill, client};

/// One connection to blue and N to green, until shutdown, an error, or (when `stop_at` is set)
/// every transaction committed before `stop_at` is applied.
///
/// Everything is connected first; `streaming` is set once the reader runs (until then, the
/// caller may drop the attempt when shutdown comes, and no task of it is left behind).
pub(super) async fn attempt(
    config: &SyncConfig,
    direction: &direction::Direction,
    metrics: &Metrics,
    shutdown: Shutdown,
    stop_at: Option<Lsn>,
    streaming: &std::sync::atomic::AtomicBool,
) -> Result<u64, SyncError> {
    // What a backfill copied, each applier must not apply again; the tables green holds. (The
    // reverse direction copies nothing: it holds the tables of its publication.) Each loaded
    // table of the forward direction must still be the one green was loaded from (`identity`).
    let (fences, loaded, identities) =
        if let Some(tables) = direction::loaded(config, direction).await? {
            (Arc::default(), tables, std::collections::HashMap::new())
        } else {
            let (mut green, conn) = client::connect(&config.target, "blueshift sync")
                .await
                .map_err(|source| SyncError::Sql {
                    what: format!("could not connect to green ({})", config.target),
                    source,
                })?;
            let fences = backfill::fences(&green, &config.slot).await;
            let tables = backfill::loaded(&green, &config.slot).await;
            let checked = match &tables {
                Ok(tables) => Some(identity::check_at_start(config, &mut green, tables).await),
                Err(_) => None,
            };
            client::close(green, conn).await;
            let fences = fences.map_err(SyncError::Backfill)?;
            let tables = tables.map_err(SyncError::Backfill)?;
            let identities = checked.expect("checked when the tables were read")?;
            let relids = identities
                .iter()
                .map(|(t, i)| (t.clone(), i.relid))
                .collect();
            let loaded = loaded::Loaded::new(tables, relids, &config.slot, &config.publication);
            (Arc::new(fences), loaded, identities)
        };
    // Green: one applier per worker, each with its own origin; the maximum of their progress
    // is the last transaction green holds.
    let mut appliers = Vec::with_capacity(config.workers);
    let mut resume_after = Lsn::INVALID;
    for n in 0..config.workers {
        let mut options = ApplierOptions::new(direction.origin_name(&config.slot, n));
        options.fences = Arc::clone(&fences);
        // Durability is confirmed separately (sync::durability), as native apply does.
        options.synchronous_commit = SynchronousCommit::Off;
        options.mapping = Arc::clone(&config.mapping);
        options.fold = config.fold;
        options.wire = config.pipelined_apply;
        if config.bidirectional {
            options.conflicts = Some(conflict_options(config, direction));
        }
        let origin = options.origin_name.clone();
        let setup = |source| SyncError::ApplierSetup {
            origin: origin.clone(),
            source,
        };
        let mut applier = Applier::connect(&config.target, options)
            .await
            .map_err(setup)?;
        resume_after = resume_after.max(applier.origin_progress().await.map_err(setup)?);
        appliers.push(applier);
    }
    let (green, green_conn) = client::connect(&config.target, "blueshift sync")
        .await
        .map_err(|source| SyncError::Sql {
            what: format!("could not connect to green ({})", config.target),
            source,
        })?;
    // Every origin of the slot counts: streamed appliers committed under theirs.
    if *direction == direction::Direction::Forward {
        resume_after = resume_after.max(streamed::durable(&green, &config.slot).await?);
    }
    // Two-way conflicts compare row versions with the moment the reverse direction was armed:
    // known before the first change is applied (the sidecar sets it too when it arms).
    if config.bidirectional && *direction == direction::Direction::Forward {
        if let Ok(Some(row)) = direction::read_reverse(&green, &config.slot).await {
            config.conflicts.armed(row.armed_at);
        }
    }

    // Blue: the slot, checked against green's record of it (created when absent and nothing on
    // green depends on it), and the stream.
    let (mut guard_green, guard_conn) = client::connect(&config.target, "blueshift slot guard")
        .await
        .map_err(|source| SyncError::Sql {
            what: format!("could not connect to green ({})", config.target),
            source,
        })?;
    // The reverse slot is never created here (only when armed, where green equals blue).
    let in_use = resume_after != Lsn::INVALID
        || !fences.is_empty()
        || *direction != direction::Direction::Forward;
    // What blue sent while green was down (see `spool`): replayed first when it continues
    // green's position, and the live stream starts at its end.
    let replay = if *direction == direction::Direction::Forward && stop_at.is_none() {
        if config.spool_limit > 0 {
            let folder = spool::folder(&spill_folder(config));
            let recorded = crate::slot_guard::read(&guard_green, &config.slot)
                .await
                .map_err(|source| SyncError::Green {
                    what: "could not read the slot guard's record on green",
                    source,
                })?;
            let green_holds = recorded
                .as_ref()
                .map_or(resume_after, |r| r.acknowledged.max(resume_after));
            spool::prepare(
                &folder,
                green_holds,
                recorded.as_ref().map(|r| r.system_identifier.as_str()),
            )?
        } else {
            // Left as it is: a later run with a spool replays or discards it by the same rules.
            None
        }
    } else {
        None
    };
    let start_at = replay.as_ref().map_or(resume_after, |r| r.end);
    let slot::Opened {
        mut stream,
        record,
        blue_sql,
        blue_sql_conn,
        status_interval,
    } = slot::open(config, &mut guard_green, start_at, in_use).await?;
    if let Some(replay) = &replay {
        if replay.proto_version != stream.proto_version() {
            spool::discard(
                &spool::folder(&spill_folder(config)),
                "blue streams another protocol version now",
            );
            return Err(SyncError::SpoolMismatch {
                why: format!(
                    "its frames are in pgoutput version {}, blue streams version {}",
                    replay.proto_version,
                    stream.proto_version()
                ),
            });
        }
    }
    tracing::info!(slot = %config.slot, resume_after = %resume_after, workers = config.workers, "sync started");
    let version = ProtocolVersion::try_from(stream.proto_version())
        .expect("start_replication negotiates a protocol version from 1 to 4");
    let feedback = stream.feedback();
    let acks = acknowledge::Acks::new(feedback.clone());
    // Streamed apply (see `streamed`): its appliers, when the protocol and settings allow.
    let streamed_appliers = streamed::connect(config, direction, version).await?;
    let (stop_acks, acks_stopped) = tokio::sync::oneshot::channel();
    let mut acknowledger = tokio::spawn(
        acknowledge::Acknowledger {
            acks: Arc::clone(&acks),
            green: guard_green,
            slot: config.slot.clone(),
            recorded: record.acknowledged,
        }
        .run(status_interval, acks_stopped),
    );

    let order = CommitOrder::new(0);
    // Verify's hold (see `hold`): the appliers check it before each commit.
    let hold = Arc::new(hold::Hold::default());
    hold.set_feedback(feedback.clone());
    let durability = Arc::new(durability::Durability::default());
    let (green_flush, flush_conn) = client::connect(&config.target, "blueshift durability")
        .await
        .map_err(|source| SyncError::Sql {
            what: format!("could not connect to green ({})", config.target),
            source,
        })?;
    let green_flush = Arc::new(green_flush);
    // Connected: from here on nothing awaits a server before the reader runs.
    metrics.set_connected(Side::Blue, true);
    metrics.set_connected(Side::Green, true);
    let mut tracker = tokio::spawn(durability::track(
        Arc::clone(&durability),
        Arc::clone(&green_flush),
        Arc::clone(&acks),
    ));
    let mut heartbeat = {
        let (green, slot, metrics) = (
            Arc::clone(&green_flush),
            config.slot.clone(),
            metrics.clone(),
        );
        Background::spawn(move |stop| heartbeat::record(green, slot, metrics, stop))
    };
    // The latest verify run, for `blueshift_verified_lsn` and `blueshift_verify_last_run_*`.
    let verified = {
        let (green, metrics) = (Arc::clone(&green_flush), metrics.clone());
        Background::spawn(move |stop| verified::watch(green, metrics, stop))
    };
    let hold_server = {
        let (hold, target, slot) = (
            Arc::clone(&hold),
            config.target.clone(),
            config.slot.clone(),
        );
        Background::spawn(move |stop| hold::serve(hold, target, slot, stop))
    };
    let (job_tx, jobs) = super::queue::channel(config.queue_capacity);
    let mut tasks = JoinSet::new();
    let mut identity_watch = tokio::spawn(identity::watch(config.clone(), identities));
    let monitor = {
        let (slot, acks, metrics) = (config.slot.clone(), Arc::clone(&acks), metrics.clone());
        Background::spawn(move |stop| {
            monitor::watch_blue(blue_sql, blue_sql_conn, slot, acks, metrics, stop)
        })
    };
    for (n, applier) in appliers.into_iter().enumerate() {
        let task = worker::run(
            n,
            applier,
            Arc::clone(&jobs),
            order.clone(),
            Arc::clone(&durability),
            metrics.clone(),
            config.turn_timeout,
            Arc::clone(&hold),
        );
        tasks.spawn(task);
    }
    let streams = if streamed_appliers.is_empty() {
        streamed::StreamApply::off()
    } else {
        let context = streamed::Context {
            order: order.clone(),
            hold: Arc::clone(&hold),
            turn_timeout: config.turn_timeout,
        };
        let fenced_until = fences
            .values()
            .map(|f| f.reconcile_before.max(f.skip_before))
            .max()
            .unwrap_or(Lsn::INVALID);
        streamed::StreamApply::start(
            streamed_appliers,
            &context,
            (resume_after, fenced_until),
            &mut tasks,
        )
    };
    // One budget for every in-flight transaction: assembling, queued, being applied.
    let budget = MemoryBudget::new(config.max_txn_memory);
    let assembler = TxAssembler::sharing(
        AssemblerOptions {
            max_memory: config.max_txn_memory,
            // The assembler owns its folder (and clears it at start): one per slot.
            spill_dir: spill_folder(config),
            skip_origin_prefix: Some(ORIGIN_PREFIX.to_owned()),
        },
        budget,
    )
    .map_err(|source| SyncError::Assemble {
        lsn: resume_after,
        source,
    })?;
    let reader = reader::Reader {
        decoder: PgOutputDecoder::new(version),
        assembler,
        scheduler: Scheduler::starting_at(1),
        keys: KeyCatalog::new(Arc::clone(&config.mapping)),
        mapping: Arc::clone(&config.mapping),
        checked: std::collections::HashMap::new(),
        loaded,
        green,
        resume_after,
        stop_at,
        order: order.clone(),
        durability: Arc::clone(&durability),
        jobs: job_tx,
        acks: Arc::clone(&acks),
        metrics: metrics.clone(),
        hold: Arc::clone(&hold),
        spilled: (0, 0),
        fence_marker: false,
        replay: replay.map(|r| reader::Replaying {
            end: r.end,
            replay: Some(r),
            folder: spool::folder(&spill_folder(config)),
        }),
        streams,
    };

    // Read until shutdown or error; an applier failing ends reading too.
    streaming.store(true, std::sync::atomic::Ordering::Release);
    let outcome = {
        let read = reader.run(&mut stream, shutdown.wait());
        tokio::pin!(read);
        loop {
            tokio::select! {
                r = &mut read => break r,
                () = heartbeat.ended(), if !heartbeat.is_finished() => break Err(SyncError::GreenClosed),
                done = &mut tracker => break Err(match done {
                    Ok(Ok(())) => SyncError::AppliersGone,
                    Ok(Err(source)) => SyncError::Green {
                        what: "lost the connection to green that confirms durable commits",
                        source,
                    },
                    Err(e) => SyncError::Task(e),
                }),
                done = &mut identity_watch => break Err(match done {
                    Ok(changed) => changed,
                    Err(e) => SyncError::Task(e),
                }),
                done = &mut acknowledger => break Err(match done {
                    Ok(Ok(())) => SyncError::AppliersGone,
                    Ok(Err(e)) => SyncError::Slot(e),
                    Err(e) => SyncError::Task(e),
                }),
                Some(done) = tasks.join_next() => {
                    match done {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => break Err(e),
                        Err(e) => break Err(SyncError::Task(e)),
                    }
                }
            }
        }
    };
    // The reader (and with it the job sender) is gone: appliers drain the queue and stop. On
    // error they are aborted; their open transactions roll back with their connections.
    // A table added to the publication ends reading like a shutdown: what was scheduled
    // before it is applied.
    let graceful = matches!(outcome, Ok(_) | Err(SyncError::TableAdded { .. }));
    let drained = if graceful {
        let mut result = Ok(());
        while let Some(done) = tasks.join_next().await {
            let failed = match done {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(e) => SyncError::Task(e),
            };
            // The others may wait for its commit turn forever: stop them (their open
            // transactions roll back with their connections).
            result = Err(failed);
            tasks.shutdown().await;
            break;
        }
        result
    } else {
        tasks.shutdown().await;
        Ok(())
    };
    // What the appliers committed becomes durable within green's wal_writer_delay: confirm it
    // before the final status update, so a restart has little to resend.
    tracker.abort();
    identity_watch.abort();
    if graceful && drained.is_ok() {
        durability::drain(&durability, &green_flush, &acks, Duration::from_secs(10)).await;
    }
    // The acknowledger records what is durable once more and hands it to the stream.
    let _ = stop_acks.send(());
    if !acknowledger.is_finished() {
        match tokio::time::timeout(Duration::from_secs(10), &mut acknowledger).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %error_chain(&e), "could not record the last durable position")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "the acknowledger ended abnormally"),
            Err(_) => acknowledger.abort(),
        }
    }
    // A final status update carries the last flushed position.
    if let Err(e) = stream.close().await {
        tracing::debug!(error = %e, "the replication stream did not end cleanly");
    }
    // Every connection ends with a Terminate: the monitor's and the heartbeat's tasks close
    // theirs when stopped, the others here (the reader and the acknowledger, which owned the
    // other clients of green, are gone).
    monitor.stop().await;
    hold_server.stop().await;
    heartbeat.stop().await;
    verified.stop().await;
    client::finish(green_conn).await;
    client::finish(guard_conn).await;
    client::close_shared(green_flush, flush_conn).await;
    let scheduled = outcome?;
    drained?;
    let applied = metrics.snapshot();
    tracing::info!(
        flushed = %feedback.flushed(),
        transactions = scheduled,
        applied_transactions = applied.applied_transactions,
        green_transactions = applied.applied_groups,
        stages_p50_p99_ms = %metrics.stage_summary(),
        "sync stopped"
    );
    Ok(scheduled)
}
