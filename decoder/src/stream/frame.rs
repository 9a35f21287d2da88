//! The frames inside the CopyData messages of a replication stream: `XLogData` and the primary
//! keepalive from the server, the standby status update from us.
//!
//! Implements the "streaming replication protocol" frames of
//! <https://www.postgresql.org/docs/current/protocol-replication.html#PROTOCOL-REPLICATION-START-REPLICATION>.
//! The envelope only: an `XLogData` payload (a `pgoutput` message) stays a `Bytes` slice of
//! the frame for [`crate::pgoutput`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use postgres_protocol::message::frontend;

use crate::connection::message::Cursor;
use crate::connection::ProtocolError;
use crate::Lsn;

/// `XLogData` (`w`).
pub const XLOG_DATA_TAG: u8 = b'w';
/// Primary keepalive message (`k`).
pub const PRIMARY_KEEPALIVE_TAG: u8 = b'k';
/// Standby status update (`r`).
pub const STANDBY_STATUS_UPDATE_TAG: u8 = b'r';

/// Seconds from the Unix epoch to PostgreSQL's, 2000-01-01 00:00:00 UTC.
const PG_EPOCH_UNIX_SECS: u64 = 946_684_800;

/// The size of a standby status update: tag, three positions, clock, reply flag.
const STATUS_UPDATE_LEN: usize = 1 + 8 + 8 + 8 + 8 + 1;

/// One frame of the replication stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationFrame {
    /// WAL data: for a logical slot, one output plugin message.
    XLogData {
        /// Where the data starts in the WAL.
        wal_start: Lsn,
        /// The current end of WAL on the server.
        wal_end: Lsn,
        /// The server's clock when it sent the frame, in µs since 2000-01-01 UTC.
        server_time: i64,
        /// The payload: a slice of the received message from [`parse_frame`]; its own copy
        /// ([`detach`](super::detach)) from [`ReplicationStream::next`](super::ReplicationStream::next).
        data: Bytes,
    },
    /// The server's keepalive.
    Keepalive {
        /// The current end of WAL on the server.
        wal_end: Lsn,
        /// The server's clock when it sent the frame, in µs since 2000-01-01 UTC.
        server_time: i64,
        /// The server asks for a status update at once, or it will time out the connection.
        reply_requested: bool,
    },
}

impl ReplicationFrame {
    /// The frame's `wal_end`.
    pub fn wal_end(&self) -> Lsn {
        match self {
            ReplicationFrame::XLogData { wal_end, .. }
            | ReplicationFrame::Keepalive { wal_end, .. } => *wal_end,
        }
    }

    /// The frame's server clock, in µs since 2000-01-01 UTC.
    pub fn server_time(&self) -> i64 {
        match self {
            ReplicationFrame::XLogData { server_time, .. }
            | ReplicationFrame::Keepalive { server_time, .. } => *server_time,
        }
    }
}

/// Parses the body of one CopyData message of the stream.
pub fn parse_frame(data: Bytes) -> Result<ReplicationFrame, ProtocolError> {
    let tag = data.first().copied().ok_or(ProtocolError::Malformed {
        message: "CopyData",
        problem: "empty replication frame",
    })?;
    let body = data.slice(1..);
    match tag {
        XLOG_DATA_TAG => {
            let mut c = Cursor::new(body, "XLogData");
            let wal_start = Lsn(c.u64()?);
            let wal_end = Lsn(c.u64()?);
            let server_time = c.i64()?;
            let data = c.rest();
            Ok(ReplicationFrame::XLogData {
                wal_start,
                wal_end,
                server_time,
                data,
            })
        }
        PRIMARY_KEEPALIVE_TAG => {
            let mut c = Cursor::new(body, "primary keepalive");
            let wal_end = Lsn(c.u64()?);
            let server_time = c.i64()?;
            let reply_requested = match c.u8()? {
                0 => false,
                1 => true,
                _ => return Err(c.malformed("reply flag is neither 0 nor 1")),
            };
            c.finish()?;
            Ok(ReplicationFrame::Keepalive {
                wal_end,
                server_time,
                reply_requested,
            })
        }
        tag => Err(ProtocolError::UnknownFrame { tag }),
    }
}

/// The positions a standby status update reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusUpdate {
    /// Received (and handed to the caller) up to here.
    pub written: Lsn,
    /// Durably applied by the caller up to here; the slot's `confirmed_flush_lsn` follows it.
    pub flushed: Lsn,
    /// Applied (visible) up to here.
    pub applied: Lsn,
    /// Our clock, in µs since 2000-01-01 UTC.
    pub client_time: i64,
    /// Ask the server to answer with a keepalive at once.
    pub reply_requested: bool,
}

impl StatusUpdate {
    /// Appends the update as a CopyData message to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let mut body = [0u8; STATUS_UPDATE_LEN];
        let mut w = body.as_mut_slice();
        w.put_u8(STANDBY_STATUS_UPDATE_TAG);
        w.put_u64(self.written.0);
        w.put_u64(self.flushed.0);
        w.put_u64(self.applied.0);
        w.put_i64(self.client_time);
        w.put_u8(u8::from(self.reply_requested));
        frontend::CopyData::new(body.as_slice())
            .expect("a 34-byte body fits a CopyData length")
            .write(out);
    }
}

/// Now, in µs since PostgreSQL's epoch (2000-01-01 UTC).
pub fn pg_time_now() -> i64 {
    system_time_to_pg_time(SystemTime::now())
}

/// A `SystemTime` in µs since PostgreSQL's epoch, saturating.
pub fn system_time_to_pg_time(t: SystemTime) -> i64 {
    let pg_epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECS);
    match t.duration_since(pg_epoch) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_micros()).map_or(i64::MIN, |us| -us),
    }
}

/// µs since PostgreSQL's epoch as a `SystemTime` (for lag metrics).
pub fn pg_time_to_system_time(micros: i64) -> SystemTime {
    let pg_epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECS);
    let offset = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        pg_epoch + offset
    } else {
        pg_epoch - offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A keepalive asking for a reply, captured from PostgreSQL 15.18: wal_end 0/1924BB0.
    const KEEPALIVE: &[u8] =
        b"\x6b\x00\x00\x00\x00\x01\x92\x4b\xb0\x00\x03\x03\xfb\x8c\xc5\xe3\xee\x01";

    /// An XLogData frame carrying a pgoutput Begin (xid 727), captured from PostgreSQL 15.18.
    const XLOG_DATA_BEGIN: &[u8] = b"\x77\x00\x00\x00\x00\x01\x92\x4b\xb8\x00\x00\x00\x00\x01\x92\x4b\xb8\
        \x00\x03\x03\xfb\x8d\xb1\x0c\xf7\x42\x00\x00\x00\x00\x01\x92\x4c\x98\x00\x03\x03\xfb\x8d\xb1\x0b\x9a\
        \x00\x00\x02\xd7";

    fn xlog_data(payload: &[u8]) -> Vec<u8> {
        let mut v = vec![b'w'];
        v.extend_from_slice(&0x0000_0001_0000_0028u64.to_be_bytes());
        v.extend_from_slice(&0x0000_0001_0000_0100u64.to_be_bytes());
        v.extend_from_slice(&123_456_789i64.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn parses_keepalive() {
        let frame = parse_frame(Bytes::from_static(KEEPALIVE)).unwrap();
        assert_eq!(
            frame,
            ReplicationFrame::Keepalive {
                wal_end: "0/1924BB0".parse().unwrap(),
                server_time: 0x0003_03fb_8cc5_e3ee,
                reply_requested: true,
            }
        );
        let mut no_reply = KEEPALIVE.to_vec();
        *no_reply.last_mut().unwrap() = 0;
        assert!(matches!(
            parse_frame(no_reply.into()).unwrap(),
            ReplicationFrame::Keepalive {
                reply_requested: false,
                ..
            }
        ));
    }

    #[test]
    fn parses_captured_xlog_data() {
        let frame = parse_frame(Bytes::from_static(XLOG_DATA_BEGIN)).unwrap();
        let ReplicationFrame::XLogData {
            wal_start,
            wal_end,
            server_time,
            data,
        } = frame
        else {
            panic!("not XLogData");
        };
        assert_eq!(wal_start.to_string(), "0/1924BB8");
        assert_eq!(wal_end, wal_start);
        assert_eq!(server_time, 0x0003_03fb_8db1_0cf7);
        assert_eq!(data.len(), 21);
        assert_eq!(data.first(), Some(&b'B'));
        for len in 1..25 {
            assert!(parse_frame(Bytes::copy_from_slice(&XLOG_DATA_BEGIN[..len])).is_err());
        }
    }

    #[test]
    fn parses_xlog_data_zero_copy() {
        let bytes = Bytes::from(xlog_data(b"B\x00payload"));
        let frame = parse_frame(bytes.clone()).unwrap();
        let ReplicationFrame::XLogData {
            wal_start,
            wal_end,
            server_time,
            data,
        } = &frame
        else {
            panic!("not XLogData");
        };
        assert_eq!(wal_start.to_string(), "1/28");
        assert_eq!(wal_end.to_string(), "1/100");
        assert_eq!(*server_time, 123_456_789);
        assert_eq!(&data[..], b"B\x00payload");
        assert_eq!(data.as_ptr(), bytes[25..].as_ptr());
        assert_eq!(frame.wal_end(), *wal_end);
        // An empty payload is legal.
        assert!(matches!(
            parse_frame(xlog_data(b"").into()).unwrap(),
            ReplicationFrame::XLogData { data, .. } if data.is_empty()
        ));
    }

    #[test]
    fn malformed_frames_are_errors() {
        assert!(matches!(
            parse_frame(Bytes::new()).unwrap_err(),
            ProtocolError::Malformed { .. }
        ));
        assert_eq!(
            parse_frame(Bytes::from_static(b"z123")).unwrap_err(),
            ProtocolError::UnknownFrame { tag: b'z' }
        );
        for len in 1..KEEPALIVE.len() {
            let truncated = Bytes::copy_from_slice(&KEEPALIVE[..len]);
            assert!(
                parse_frame(truncated).is_err(),
                "keepalive cut at {len} parsed"
            );
        }
        let mut trailing = KEEPALIVE.to_vec();
        trailing.push(0);
        assert!(parse_frame(trailing.into()).is_err());
        let mut bad_flag = KEEPALIVE.to_vec();
        *bad_flag.last_mut().unwrap() = 7;
        assert!(parse_frame(bad_flag.into()).is_err());
        let full = xlog_data(b"");
        for len in 1..full.len() {
            let truncated = Bytes::copy_from_slice(&full[..len]);
            assert!(
                parse_frame(truncated).is_err(),
                "XLogData cut at {len} parsed"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_frames_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = parse_frame(Bytes::from(bytes));
        }

        #[test]
        fn encoded_frames_parse_back(
            wal_start in proptest::prelude::any::<u64>(),
            wal_end in proptest::prelude::any::<u64>(),
            server_time in proptest::prelude::any::<i64>(),
            reply in proptest::prelude::any::<bool>(),
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let mut xlog = vec![XLOG_DATA_TAG];
            xlog.extend_from_slice(&wal_start.to_be_bytes());
            xlog.extend_from_slice(&wal_end.to_be_bytes());
            xlog.extend_from_slice(&server_time.to_be_bytes());
            xlog.extend_from_slice(&payload);
            proptest::prop_assert_eq!(
                parse_frame(Bytes::from(xlog)).unwrap(),
                ReplicationFrame::XLogData {
                    wal_start: Lsn(wal_start),
                    wal_end: Lsn(wal_end),
                    server_time,
                    data: Bytes::from(payload),
                }
            );
            let mut keepalive = vec![PRIMARY_KEEPALIVE_TAG];
            keepalive.extend_from_slice(&wal_end.to_be_bytes());
            keepalive.extend_from_slice(&server_time.to_be_bytes());
            keepalive.push(u8::from(reply));
            proptest::prop_assert_eq!(
                parse_frame(Bytes::from(keepalive)).unwrap(),
                ReplicationFrame::Keepalive {
                    wal_end: Lsn(wal_end),
                    server_time,
                    reply_requested: reply,
                }
            );
        }
    }

    #[test]
    fn encodes_status_update() {
        let mut out = BytesMut::new();
        StatusUpdate {
            written: Lsn(0x1_0000_0100),
            flushed: Lsn(0x1_0000_0028),
            applied: Lsn::INVALID,
            client_time: 0x0102_0304_0506_0708,
            reply_requested: false,
        }
        .encode(&mut out);
        let expected: &[u8] = b"d\x00\x00\x00\x26r\
            \x00\x00\x00\x01\x00\x00\x01\x00\
            \x00\x00\x00\x01\x00\x00\x00\x28\
            \x00\x00\x00\x00\x00\x00\x00\x00\
            \x01\x02\x03\x04\x05\x06\x07\x08\x00";
        assert_eq!(&out[..], expected);
    }

    #[test]
    fn pg_epoch_conversions() {
        let pg_epoch = UNIX_EPOCH + Duration::from_secs(946_684_800);
        assert_eq!(system_time_to_pg_time(pg_epoch), 0);
        assert_eq!(
            system_time_to_pg_time(pg_epoch + Duration::from_micros(5)),
            5
        );
        assert_eq!(
            system_time_to_pg_time(pg_epoch - Duration::from_micros(5)),
            -5
        );
        assert_eq!(
            pg_time_to_system_time(-5),
            pg_epoch - Duration::from_micros(5)
        );
        let now = SystemTime::now();
        let round = pg_time_to_system_time(system_time_to_pg_time(now));
        assert!(now.duration_since(round).unwrap_or_default() < Duration::from_micros(1));
        assert!(pg_time_now() > 700_000_000_000_000);
    }
}
