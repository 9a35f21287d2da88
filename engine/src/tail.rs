//! `tail`: the decoded change stream of a slot, handed to a [`TailSink`] message by message
//! (JSON lines for `blueshift tail`, counters for the demo).
//!
//! ```text
//! blue ──► ReplicationStream ──XLogData──► PgOutputDecoder ──► RelationCache ──► TailSink
//!               ▲                                                                   │
//!               └──── FeedbackHandle::set_flushed(end of last transaction) ◄── flush()
//! ```
//!
//! Acknowledgement: the slot is told *flushed* only after the sink has flushed everything up
//! to the end of a transaction (Commit, Stream Commit, Commit/Rollback Prepared), and, when no
//! transaction is open, up to a keepalive's `wal_end` (every transaction committed before it has
//! been sent ahead of the keepalive on the same connection). A restart therefore resumes after
//! the last transaction the sink has written out — none lost, none repeated whole.

mod render;

use std::future::Future;
use std::io::{self, Write};
use std::time::Duration;

use blueshift_decoder::config::ConnectConfig;
use blueshift_decoder::connection::{
    CreateSlotOptions, ReplicationConnection, ReplicationError, SnapshotAction,
};
use blueshift_decoder::pgoutput::{DecodeError, PgOutputDecoder, PgOutputMessage, ProtocolVersion};
use blueshift_decoder::relation::RelationCache;
use blueshift_decoder::stream::{ReplicationFrame, StartOptions, StatusOptions, Streaming};
use blueshift_decoder::Lsn;

pub use render::RenderError;

/// Which slot to stream from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotChoice {
    /// A temporary slot created for this run, dropped when the connection ends: streaming
    /// starts at its consistent point, and nothing is kept across runs.
    Temporary,
    /// A permanent slot; with `create`, it is created when it does not exist.
    Named {
        /// The slot's name.
        name: String,
        /// Create it when absent.
        create: bool,
    },
}

/// What to tail and how.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// The source (blue) connection settings; `replication=database` is added.
    pub source: ConnectConfig,
    /// Publications to stream.
    pub publications: Vec<String>,
    /// The slot.
    pub slot: SlotChoice,
    /// Start here instead of the slot's confirmed position.
    pub from: Option<Lsn>,
    /// Stop once everything up to this position has been written out.
    pub until: Option<Lsn>,
    /// Ask for values in binary (printed as hex).
    pub binary: bool,
    /// Ask for `pg_logical_emit_message` messages.
    pub messages: bool,
    /// Receive large in-progress transactions in chunks (protocol 2+).
    pub streaming: bool,
    /// `pgoutput` protocol version; `None` = the best the server supports.
    pub proto_version: Option<u32>,
    /// Interval of standby status updates.
    pub status_interval: Duration,
}

/// Where decoded messages go.
pub trait TailSink {
    /// One decoded message from the frame starting at `lsn`. `relations` has already observed
    /// it.
    fn message(
        &mut self,
        lsn: Lsn,
        message: &PgOutputMessage,
        relations: &RelationCache,
    ) -> Result<(), TailError>;

    /// Makes everything passed so far durable (written out); called before the slot is told
    /// it may forget it.
    fn flush(&mut self) -> io::Result<()>;
}

/// Writes each message as one JSON object per line.
#[derive(Debug)]
pub struct JsonLines<W: Write> {
    out: W,
}

impl<W: Write> JsonLines<W> {
    /// A sink writing to `out` (buffer it; [`TailSink::flush`] flushes).
    pub fn new(out: W) -> Self {
        JsonLines { out }
    }
}

impl<W: Write> TailSink for JsonLines<W> {
    fn message(
        &mut self,
        lsn: Lsn,
        message: &PgOutputMessage,
        relations: &RelationCache,
    ) -> Result<(), TailError> {
        let value =
            render::render(lsn, message, relations).map_err(|source| TailError::Render {
                lsn,
                source: Box::new(source),
            })?;
        serde_json::to_writer(&mut self.out, &value)
            .map_err(|e| TailError::Output(io::Error::from(e)))?;
        self.out.write_all(b"\n").map_err(TailError::Output)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Why tailing stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// The replication connection failed.
    #[error("replication from the source failed")]
    Replication(#[source] ReplicationError),
    /// A payload could not be decoded.
    #[error("could not decode the pgoutput message at {lsn}")]
    Decode {
        /// Where the frame starts.
        lsn: Lsn,
        /// Why.
        #[source]
        source: DecodeError,
    },
    /// A message could not be rendered.
    #[error("could not render the message at {lsn}")]
    Render {
        /// Where the frame starts.
        lsn: Lsn,
        /// Why.
        #[source]
        source: Box<RenderError>,
    },
    /// Writing the output failed.
    #[error("could not write the output")]
    Output(#[source] io::Error),
    /// The named slot does not exist and creating it was not asked for.
    #[error(
        "replication slot \"{slot}\" does not exist — create it with --create-slot, or use --temporary-slot"
    )]
    NoSuchSlot {
        /// The slot's name.
        slot: String,
    },
    /// The slot exists but cannot be streamed with pgoutput from this database.
    #[error("replication slot \"{slot}\" cannot be used: {problem}")]
    UnusableSlot {
        /// The slot's name.
        slot: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The server reported a protocol version this build does not know.
    #[error("unsupported pgoutput protocol version {0}")]
    ProtocolVersion(u32),
}

impl From<ReplicationError> for TailError {
    fn from(e: ReplicationError) -> Self {
        TailError::Replication(e)
    }
}

/// What a tail run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TailSummary {
    /// Messages passed to the sink.
    pub messages: u64,
    /// Transactions that ended (committed, rolled back or aborted) in the stream.
    pub transactions: u64,
    /// The last position acknowledged as flushed.
    pub acknowledged: Lsn,
    /// Where streaming started.
    pub start_lsn: Lsn,
    /// The protocol version used.
    pub proto_version: u32,
}

/// Streams from the slot into `sink` until `shutdown` completes, `until` is reached, or the
/// server ends the stream. Every run ends with a final status update, so what the sink flushed
/// is acknowledged.
pub async fn tail<S: TailSink + ?Sized>(
    options: TailOptions,
    sink: &mut S,
    shutdown: impl Future<Output = ()>,
) -> Result<TailSummary, TailError> {
    let mut connection = ReplicationConnection::connect(&options.source).await?;
    let system = connection.identify_system().await?;
    tracing::info!(
        server = %options.source,
        server_version = connection.server_version(),
        timeline = system.timeline,
        xlogpos = %system.xlogpos,
        "connected to the source"
    );
    // Status goes out within a third of the server's timeout, however slow the sink.
    let wal_sender_timeout = connection.wal_sender_timeout().await?;
    let (slot, start_at) = prepare_slot(&mut connection, &options).await?;
    let start_lsn = options.from.unwrap_or(start_at);

    let start = StartOptions {
        publication_names: options.publications.clone(),
        proto_version: options.proto_version,
        binary: options.binary,
        messages: options.messages,
        streaming: if options.streaming {
            Streaming::On
        } else {
            Streaming::Off
        },
        origin: None,
        two_phase: false,
    };
    let status = StatusOptions {
        interval: options.status_interval,
    }
    .within(wal_sender_timeout);
    let mut stream = connection
        .start_replication(&slot, start_lsn, start, status)
        .await?;
    let proto = stream.proto_version();
    let version =
        ProtocolVersion::try_from(proto).map_err(|_| TailError::ProtocolVersion(proto))?;
    let feedback = stream.feedback();
    let mut decoder = PgOutputDecoder::new(version);
    let mut relations = RelationCache::new();
    let mut summary = TailSummary {
        start_lsn,
        proto_version: proto,
        ..TailSummary::default()
    };
    // Inside Begin … Commit (or Begin Prepare … Prepare): keepalives must not be acknowledged.
    let mut in_transaction = false;

    let acknowledge = |sink: &mut S, lsn: Lsn, summary: &mut TailSummary| {
        sink.flush().map_err(TailError::Output)?;
        feedback.set_flushed(lsn);
        feedback.set_applied(lsn);
        summary.acknowledged = summary.acknowledged.max(lsn);
        Ok::<(), TailError>(())
    };

    tokio::pin!(shutdown);
    let result: Result<(), TailError> = async {
        loop {
            let frame = tokio::select! {
                biased;
                () = &mut shutdown => {
                    tracing::info!("stopping on request");
                    return Ok(());
                }
                frame = stream.next() => frame?,
            };
            let Some(frame) = frame else {
                tracing::info!("the source ended the replication stream");
                return Ok(());
            };
            match frame {
                ReplicationFrame::XLogData {
                    wal_start, data, ..
                } => {
                    let message = decoder.decode(data).map_err(|source| TailError::Decode {
                        lsn: wal_start,
                        source,
                    })?;
                    relations.observe(&message);
                    sink.message(wal_start, &message, &relations)?;
                    summary.messages += 1;
                    let ended = match &message {
                        PgOutputMessage::Begin(_) | PgOutputMessage::BeginPrepare(_) => {
                            in_transaction = true;
                            None
                        }
                        PgOutputMessage::Commit(c) => Some(c.end_lsn),
                        PgOutputMessage::Prepare(p) => Some(p.end_lsn),
                        PgOutputMessage::StreamCommit(c) => Some(c.end_lsn),
                        PgOutputMessage::StreamPrepare(p) => Some(p.end_lsn),
                        PgOutputMessage::CommitPrepared(c) => Some(c.end_lsn),
                        PgOutputMessage::RollbackPrepared(r) => Some(r.rollback_end_lsn),
                        PgOutputMessage::StreamAbort(a) if a.xid == a.subxid => {
                            summary.transactions += 1;
                            None
                        }
                        _ => None,
                    };
                    if let Some(end) = ended {
                        in_transaction = false;
                        summary.transactions += 1;
                        acknowledge(sink, end, &mut summary)?;
                        if options.until.is_some_and(|until| end >= until) {
                            return Ok(());
                        }
                    }
                }
                ReplicationFrame::Keepalive { wal_end, .. } => {
                    if !in_transaction && !decoder.in_stream() {
                        acknowledge(sink, wal_end, &mut summary)?;
                        if options.until.is_some_and(|until| wal_end >= until) {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
    .await;

    // Flush what was written even on error, then end the stream cleanly so the last
    // acknowledged position reaches the server.
    let flushed = sink.flush();
    let closed = stream.close().await;
    result?;
    flushed.map_err(TailError::Output)?;
    if let Err(e) = closed {
        tracing::warn!(error = %e, "the replication stream did not end cleanly");
    }
    tracing::info!(
        slot = %slot,
        messages = summary.messages,
        transactions = summary.transactions,
        acknowledged = %summary.acknowledged,
        "tail stopped"
    );
    Ok(summary)
}

/// Creates or checks the slot; returns its name and where to start (`0/0` = the slot's
/// confirmed position).
async fn prepare_slot(
    connection: &mut ReplicationConnection,
    options: &TailOptions,
) -> Result<(String, Lsn), TailError> {
    match &options.slot {
        SlotChoice::Temporary => {
            let name = format!("blueshift_tail_{}", std::process::id());
            let create = CreateSlotOptions {
                temporary: true,
                snapshot: SnapshotAction::NoExport,
                two_phase: false,
            };
            let created = connection.create_slot(&name, create).await?;
            Ok((name, created.consistent_point))
        }
        SlotChoice::Named { name, create } => {
            blueshift_decoder::connection::validate_slot_name(name)?;
            // The name is validated ([a-z0-9_]), so it is safe inside a literal.
            let rows = connection
                .simple_query(&format!(
                    "SELECT plugin, slot_type, database, \
                     (SELECT current_database()) AS current FROM pg_replication_slots \
                     WHERE slot_name = '{name}'"
                ))
                .await?;
            match rows.first() {
                None if *create => {
                    let created = connection
                        .create_slot(
                            name,
                            CreateSlotOptions {
                                temporary: false,
                                snapshot: SnapshotAction::NoExport,
                                two_phase: false,
                            },
                        )
                        .await?;
                    Ok((name.clone(), created.consistent_point))
                }
                None => Err(TailError::NoSuchSlot { slot: name.clone() }),
                Some(row) => {
                    let problem = if row.get(1) != Some("logical") {
                        Some("it is a physical slot; a logical slot with the pgoutput plugin is needed".to_owned())
                    } else if row.get(0) != Some("pgoutput") {
                        Some(format!(
                            "it uses the output plugin {:?}; blueshift needs pgoutput",
                            row.get(0).unwrap_or_default()
                        ))
                    } else if row.get(2) != row.get(3) {
                        Some(format!(
                            "it belongs to database {:?}, not {:?}",
                            row.get(2).unwrap_or_default(),
                            row.get(3).unwrap_or_default()
                        ))
                    } else {
                        None
                    };
                    match problem {
                        Some(problem) => Err(TailError::UnusableSlot {
                            slot: name.clone(),
                            problem,
                        }),
                        None => Ok((name.clone(), Lsn::INVALID)),
                    }
                }
            }
        }
    }
}
