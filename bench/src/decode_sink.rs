//! The `decode` scenario's blueshift side: blueshift's replication stream and pgoutput decoder
//! (the `tail` loop of the engine, which `blueshift sync` reads with too) into a sink that only
//! counts, until an end LSN. Run as `blueshift bench-decode-sink` so that its memory and CPU
//! are its own process's.

use std::io;
use std::time::Duration;

use blueshift_decoder::config::ConnectConfig;
use blueshift_decoder::pgoutput::PgOutputMessage;
use blueshift_decoder::relation::RelationCache;
use blueshift_decoder::Lsn;
use blueshift_engine::tail::{self, SlotChoice, TailError, TailOptions, TailSink};
use serde::{Deserialize, Serialize};

/// What to consume.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// Blue (`replication=database` is added).
    pub source: ConnectConfig,
    /// Publication names.
    pub publications: Vec<String>,
    /// An existing pgoutput slot.
    pub slot: String,
    /// Stop once everything up to here has been consumed.
    pub until: Lsn,
    /// pgoutput protocol version (the bench passes the same one to `pg_recvlogical`).
    pub proto_version: u32,
}

/// What was decoded, printed as JSON by `blueshift bench-decode-sink`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counts {
    /// Every message.
    pub messages: u64,
    /// Transactions committed.
    pub commits: u64,
    /// Rows inserted.
    pub inserts: u64,
    /// Rows updated.
    pub updates: u64,
    /// Rows deleted.
    pub deletes: u64,
}

/// Counts each decoded message; keeps nothing.
#[derive(Debug, Default)]
struct Discard {
    counts: Counts,
}

impl TailSink for Discard {
    fn message(
        &mut self,
        _lsn: Lsn,
        message: &PgOutputMessage,
        _relations: &RelationCache,
    ) -> Result<(), TailError> {
        let c = &mut self.counts;
        c.messages += 1;
        match message {
            PgOutputMessage::Insert(_) => c.inserts += 1,
            PgOutputMessage::Update(_) => c.updates += 1,
            PgOutputMessage::Delete(_) => c.deletes += 1,
            PgOutputMessage::Commit(_) | PgOutputMessage::StreamCommit(_) => c.commits += 1,
            _ => {}
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Consumes the slot up to `until` (streaming off, no logical messages: what `pg_recvlogical`
/// asks for with the same `proto_version` and `publication_names`), and returns the counts.
pub async fn run(options: SinkOptions) -> anyhow::Result<Counts> {
    let mut sink = Discard::default();
    let tail_options = TailOptions {
        source: options.source,
        publications: options.publications,
        slot: SlotChoice::Named {
            name: options.slot,
            create: false,
        },
        from: None,
        until: Some(options.until),
        binary: false,
        messages: false,
        streaming: false,
        proto_version: Some(options.proto_version),
        status_interval: Duration::from_secs(10),
    };
    tail::tail(tail_options, &mut sink, std::future::pending()).await?;
    Ok(sink.counts)
}
