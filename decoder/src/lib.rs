//! blueshift's replication connection and `pgoutput` decoder.
//!
//! Two halves, kept apart:
//!
//! - the **replication connection** ([`config`], [`connection`], [`stream`]): a connection of
//!   our own with `replication=database` (tokio-postgres has no replication protocol), built on
//!   `postgres-protocol` for startup, authentication and framing. It runs the replication
//!   commands (`IDENTIFY_SYSTEM`, `CREATE_REPLICATION_SLOT`, `DROP_REPLICATION_SLOT`,
//!   `START_REPLICATION`) and then the CopyBoth stream of `XLogData` and keepalive frames,
//!   answering keepalives and sending standby status updates. See
//!   <https://www.postgresql.org/docs/current/protocol-replication.html>.
//! - the **`pgoutput` decoder** ([`pgoutput`], [`relation`]): parses each `XLogData` payload into
//!   a typed message whose column values are slices of the frame. See
//!   <https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>.
//!
//! No SQL client and no engine logic live here.

#![cfg_attr(not(test), warn(clippy::indexing_slicing))]

pub mod config;
pub mod connection;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod ident;
pub mod lsn;
pub mod oid;
pub mod pgoutput;
pub mod relation;
pub mod stream;
pub mod tls;
pub mod xid;

pub use lsn::{Lsn, ParseLsnError};
pub use oid::Oid;
pub use pgoutput::{
    decode_message, DecodeContext, DecodeError, PgOutputDecoder, PgOutputMessage, ProtocolVersion,
};
pub use relation::{RelationCache, RelationInfo};
pub use xid::Xid;

// The replication connection.
pub use config::{ConfigError, ConnectConfig, Password};
pub use connection::{ReplicationConnection, ReplicationError, ServerError};
pub use stream::{
    FeedbackHandle, ReplicationFrame, ReplicationStream, StartOptions, StatusOptions,
};
