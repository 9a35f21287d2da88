//! Fuzz target `replication_frame`: arbitrary bytes into the replication stream's frame reader
//! (`blueshift_decoder::stream::parse_frame`, the body of one CopyData message: `XLogData` or a
//! primary keepalive).
//!
//! Besides "never panics": an `XLogData` frame's three fields are the big-endian words of its
//! header and its payload is the rest of the input, as a slice of it (zero-copy); a keepalive is
//! exactly 18 bytes with a reply flag of 0 or 1; either encodes back to exactly the input; a
//! frame that fails names its first byte when that byte is no frame's tag, and its error
//! formats. A keepalive's positions then go into a standby status update, which must encode to
//! the 39-byte CopyData the protocol defines. Allocation budget: 4 bytes per input byte plus
//! 4 KiB (the frame is one copy of the input; nothing else grows with it).
//! Format: <https://www.postgresql.org/docs/current/protocol-replication.html>.

#![no_main]

use blueshift_decoder::connection::ProtocolError;
use blueshift_decoder::stream::{parse_frame, StatusUpdate};
use blueshift_decoder::{Lsn, ReplicationFrame};
use blueshift_decoder_fuzz::alloc::{bounded, Budget};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

const BUDGET: Budget = Budget {
    per_input_byte: 4,
    fixed: 4096,
};

fn word(data: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(data[at..at + 8].try_into().expect("8 bytes"))
}

fuzz_target!(|data: &[u8]| {
    bounded(data.len(), BUDGET, || {
        let input = Bytes::copy_from_slice(data);
        match parse_frame(input.clone()) {
            Ok(ReplicationFrame::XLogData {
                wal_start,
                wal_end,
                server_time,
                data: payload,
            }) => {
                assert!(data.len() >= 25 && data[0] == b'w');
                assert_eq!(wal_start, Lsn(word(data, 1)));
                assert_eq!(wal_end, Lsn(word(data, 9)));
                assert_eq!(server_time as u64, word(data, 17));
                assert_eq!(&payload[..], &data[25..]);
                // Zero-copy: the payload is the input's own bytes.
                assert_eq!(payload.as_ptr(), input[25..].as_ptr());
                let mut again = vec![b'w'];
                again.extend_from_slice(&wal_start.0.to_be_bytes());
                again.extend_from_slice(&wal_end.0.to_be_bytes());
                again.extend_from_slice(&server_time.to_be_bytes());
                again.extend_from_slice(&payload);
                assert_eq!(again, data);
            }
            Ok(ReplicationFrame::Keepalive {
                wal_end,
                server_time,
                reply_requested,
            }) => {
                assert_eq!(data.len(), 18);
                assert_eq!(data[0], b'k');
                assert_eq!(wal_end, Lsn(word(data, 1)));
                assert_eq!(server_time as u64, word(data, 9));
                assert_eq!(data[17], u8::from(reply_requested));
                check_status_update(wal_end, server_time, reply_requested);
            }
            Err(e) => {
                match (&e, data.first()) {
                    (ProtocolError::UnknownFrame { tag }, Some(first)) => {
                        assert_eq!(tag, first);
                        assert!(*tag != b'w' && *tag != b'k');
                    }
                    (ProtocolError::Malformed { .. }, _) => {}
                    (other, _) => panic!("unexpected error for a frame: {other:?}"),
                }
                assert!(!e.to_string().is_empty());
            }
        }
    });
});

/// The answer to a keepalive carries our positions in the protocol's layout.
fn check_status_update(wal_end: Lsn, server_time: i64, reply: bool) {
    let update = StatusUpdate {
        written: wal_end,
        flushed: Lsn(wal_end.0 / 2),
        applied: Lsn(wal_end.0 / 3),
        client_time: server_time,
        reply_requested: reply,
    };
    let mut out = BytesMut::new();
    update.encode(&mut out);
    let mut want = vec![b'd', 0, 0, 0, 38, b'r'];
    for word in [
        update.written.0,
        update.flushed.0,
        update.applied.0,
        server_time as u64,
    ] {
        want.extend_from_slice(&word.to_be_bytes());
    }
    want.push(u8::from(reply));
    assert_eq!(&out[..], &want[..]);
}
