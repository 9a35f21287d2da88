//! The spool: blue's stream keeps being read while green is down, into a durable local file,
//! and applied from it once green is back.
//!
//! ```text
//!  attempt ends, green unreachable ──► outage: blue's stream (from the spool's end, else the
//!        ▲                              slot's confirmed_flush) ──► spool file, fsync'd in
//!        │                              batches, never acknowledged; until green answers again
//!        │                                                   │
//!        └──── next attempt: green's durable position G ◄────┘
//!              spool continues G?  replay its frames (skipping what is ≤ G) through the normal
//!                                  reader, scheduler and appliers, then the live stream
//!                                  started at the spool's end E
//!              otherwise           discard it (logged with why), stream from G as always
//! ```
//!
//! **A cache, never the source of truth.** The slot is acknowledged only up to green's durable
//! position, exactly as without a spool (the outage's stream reports `0/0` as flushed, which
//! the walsender ignores, and its status task keeps answering keepalives, so
//! `wal_sender_timeout` never ends it). Everything in the spool is therefore still in the slot,
//! which is what makes every decision below safe: discarding a spool costs only decoding again.
//!
//! **Format.** One file, `spool.bin`, in a folder beside the assembler's spill folder (the
//! spill folder's lock, one sync per folder on a host, covers it). A header (magic, the
//! `pgoutput` protocol version, the position `start` the outage's stream began at, blue's
//! system identifier) and then records: `kind u8, lsn u64, len u32, xxh3 u64, payload`, the
//! checksum covering kind, lsn, length and payload. A *frame* record is one `XLogData` payload
//! as blue sent it (Relation and Type messages included, so a fresh decoder replays it); a
//! *mark* record follows a commit after which no transaction and no streamed transaction is
//! open, and carries that commit's end LSN. The spool's usable content ends at its last mark,
//! `end`: everything committed at or after `start` and before `end` is in it, and a stream
//! started at `end` sends exactly what follows (PostgreSQL skips transactions whose commit
//! record starts before the start position). Frames after the last mark (a transaction cut by
//! the end of the outage or a crash) are cut off when the spool is opened again.
//!
//! **Green's return** is seen within a quarter of a second: the outage tries to connect to
//! green every 250 ms (a refused connection costs nothing), not with the attempts' backoff.
//!
//! **Durability.** The writer fsyncs after a mark at most every [`SYNC_EVERY`], and always
//! before the outage ends; a replay uses only what was fsync'd (the file is reopened and
//! scanned). A record cut short by a crash (a torn tail) is dropped with the frames after the
//! last mark. A *complete* record whose checksum does not match is corruption: that is an
//! error naming the file (fail closed: the disk under the spool is not trustworthy, and the
//! operator must look), with the fix — remove the file; the slot still holds everything in it.
//!
//! **Reuse.** When green is back, the attempt reads green's durable position G (the appliers'
//! origin progress) first. The spool is replayed only when it continues G: `start ≤ G` (nothing
//! between G and the spool is missing) and `G < end` (something in it is not on green yet), the
//! same blue system wrote it, and the same protocol version reads it. Otherwise it is removed
//! and the attempt streams from G. The same rules hold after a restart of blueshift: a spool
//! written before a `kill -9` is reused by the next process when it continues green's
//! position. Once green's durable position passes `end`, the file is removed (trimmed as a
//! whole: it is only ever written during an outage and read right after it).
//!
//! **The slot guard while green is down.** The guard's record lives on green, so the outage
//! cannot check it. It checks what blue alone can say: the slot exists and, once streaming,
//! its `confirmed_flush_lsn` (where the server really starts) is not past the position asked
//! for — a slot advanced or re-created during the outage would start later, so the spool is
//! discarded instead of continued (everything in it is still in a legitimate slot, or the
//! guard stops sync below). And blue is the system that wrote the spool. The full guard
//! ([`super::slot`]) runs when green is back, before the first transaction from the spool is
//! applied: a slot that is not the one blueshift left stops sync then, whatever the spool
//! holds. Nothing is ever acknowledged from the spool.
//!
//! **Bounded.** `--spool-limit` bytes (0: no spool, a green outage ends the attempt and
//! reconnects as before). Once the file reaches it, the outage stops reading blue (its
//! walsender waits; the status task still answers keepalives), logs it and sets
//! `blueshift_spool_full`; nothing is lost: what was not read stays in the slot.
//!
//! Not covered: a green that is up but slow (queue and budget full) does not spool; the reader
//! waits for the appliers as before.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use blueshift_decoder::Lsn;
use bytes::Bytes;

/// The default `--spool-limit`: 1 GiB.
pub const DEFAULT_LIMIT: u64 = 1 << 30;

/// The longest time a spooled commit waits for its fsync.
pub(crate) const SYNC_EVERY: Duration = Duration::from_millis(200);

const MAGIC: &[u8; 8] = b"BSSPOOL1";
const FILE_NAME: &str = "spool.bin";
const KIND_FRAME: u8 = 1;
const KIND_MARK: u8 = 2;
/// kind, lsn, len, checksum.
const RECORD_HEADER: usize = 1 + 8 + 4 + 8;
/// The largest payload a record may claim (a pgoutput message is bounded by blue's 1 GiB
/// field limit, plus framing).
const MAX_PAYLOAD: u32 = (1 << 30) + (1 << 20);

/// Why the spool cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Reading or writing the file failed.
    #[error("could not {op} the spool file {path:?}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A complete record does not match its checksum, or the header is not a spool's.
    #[error(
        "the spool file {path:?} is corrupt at byte {offset}: {why}. blueshift does not apply \
         from a damaged spool. Everything in it is still in blue's slot (the slot is acknowledged \
         only up to green's durable position): check the disk, remove the file and start sync \
         again — it decodes from the slot"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the bad record starts.
        offset: u64,
        /// What is wrong.
        why: String,
    },
}

/// What a spool file says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    /// The `pgoutput` protocol version its frames are in.
    pub(crate) proto_version: u32,
    /// The position the stream that filled it started at: every transaction committed at or
    /// after it (and before [`Contents::end`]) is in the file.
    pub(crate) start: Lsn,
    /// Blue's system identifier.
    pub(crate) system_identifier: String,
}

/// A scanned spool file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Contents {
    pub(crate) header: Header,
    /// The end LSN of the last marked commit (`header.start` when there is none).
    pub(crate) end: Lsn,
    /// The bytes up to and including the last mark.
    pub(crate) len: u64,
    /// Frame records up to the last mark.
    pub(crate) frames: u64,
}

/// The spool's folder for the spill folder `spill_folder`: beside it, so the same lock covers
/// both.
pub(crate) fn folder(spill_folder: &Path) -> PathBuf {
    let mut name = spill_folder.as_os_str().to_owned();
    name.push(".spool");
    PathBuf::from(name)
}

/// The spool file in `folder`.
pub(crate) fn file(folder: &Path) -> PathBuf {
    folder.join(FILE_NAME)
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

fn checksum(kind: u8, lsn: Lsn, payload: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&[kind]);
    h.update(&lsn.0.to_be_bytes());
    h.update(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    h.update(payload);
    h.digest()
}

fn encode_header(header: &Header) -> Vec<u8> {
    let id = header.system_identifier.as_bytes();
    let mut out = Vec::with_capacity(8 + 4 + 8 + 4 + id.len() + 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&header.proto_version.to_be_bytes());
    out.extend_from_slice(&header.start.0.to_be_bytes());
    out.extend_from_slice(&u32::try_from(id.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(id);
    let sum = xxhash_rust::xxh3::xxh3_64(&out);
    out.extend_from_slice(&sum.to_be_bytes());
    out
}

/// Reads exactly `buf.len()` bytes; false at a clean or torn end of file.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => return Ok(false),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Reads the header; `Ok(None)` when the file is shorter than one (torn at creation).
fn read_header(r: &mut impl Read, path: &Path) -> Result<Option<(Header, u64)>, SpoolError> {
    let mut fixed = [0u8; 8 + 4 + 8 + 4];
    if !read_full(r, &mut fixed).map_err(io("read", path))? {
        return Ok(None);
    }
    let corrupt = |why: &str| SpoolError::Corrupt {
        path: path.to_owned(),
        offset: 0,
        why: why.to_owned(),
    };
    if &fixed[..8] != MAGIC {
        return Err(corrupt("it does not start with a spool header"));
    }
    let id_len = be_u32(&fixed[20..24]);
    if id_len > 1024 {
        return Err(corrupt(
            "its header names an impossible system identifier length",
        ));
    }
    let mut rest = vec![0u8; id_len as usize + 8];
    if !read_full(r, &mut rest).map_err(io("read", path))? {
        return Ok(None);
    }
    let (id, sum) = rest.split_at(id_len as usize);
    let mut all = fixed.to_vec();
    all.extend_from_slice(id);
    if xxhash_rust::xxh3::xxh3_64(&all) != be_u64(sum) {
        return Err(corrupt("its header does not match its checksum"));
    }
    let system_identifier = String::from_utf8(id.to_vec())
        .map_err(|_| corrupt("its header's system identifier is not UTF-8"))?;
    let header = Header {
        proto_version: be_u32(&fixed[8..12]),
        start: Lsn(be_u64(&fixed[12..20])),
        system_identifier,
    };
    Ok(Some((header, (all.len() + 8) as u64)))
}

/// One record read back.
enum Record {
    Frame(Lsn, Bytes),
    Mark(Lsn),
}

/// Reads the record at `offset`; `Ok(None)` at the end of the file or a torn record.
fn read_record(
    r: &mut impl Read,
    path: &Path,
    offset: u64,
) -> Result<Option<(Record, u64)>, SpoolError> {
    let mut head = [0u8; RECORD_HEADER];
    if !read_full(r, &mut head).map_err(io("read", path))? {
        return Ok(None);
    }
    let corrupt = |why: String| SpoolError::Corrupt {
        path: path.to_owned(),
        offset,
        why,
    };
    let kind = head[0];
    let lsn = Lsn(be_u64(&head[1..9]));
    let len = be_u32(&head[9..13]);
    let sum = be_u64(&head[13..21]);
    if len > MAX_PAYLOAD || !matches!(kind, KIND_FRAME | KIND_MARK) {
        return Err(corrupt(format!(
            "a record header claims kind {kind} and {len} bytes"
        )));
    }
    let mut payload = vec![0u8; len as usize];
    if !read_full(r, &mut payload).map_err(io("read", path))? {
        return Ok(None);
    }
    if checksum(kind, lsn, &payload) != sum {
        return Err(corrupt(format!(
            "the record at {lsn} does not match its checksum"
        )));
    }
    let size = (RECORD_HEADER + payload.len()) as u64;
    let record = match kind {
        KIND_FRAME => Record::Frame(lsn, Bytes::from(payload)),
        _ => Record::Mark(lsn),
    };
    Ok(Some((record, size)))
}

/// Scans the spool file in `folder`: `Ok(None)` when there is none (or it was torn before its
/// header was written). Every complete record's checksum is checked.
pub(crate) fn scan(folder: &Path) -> Result<Option<Contents>, SpoolError> {
    let path = file(folder);
    let f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("open", &path)(e)),
    };
    let mut r = BufReader::with_capacity(256 << 10, f);
    let Some((header, mut offset)) = read_header(&mut r, &path)? else {
        return Ok(None);
    };
    let mut contents = Contents {
        end: header.start,
        header,
        len: offset,
        frames: 0,
    };
    let mut frames = 0;
    while let Some((record, size)) = read_record(&mut r, &path, offset)? {
        offset += size;
        match record {
            Record::Frame(..) => frames += 1,
            Record::Mark(end) => {
                contents.end = end;
                contents.len = offset;
                contents.frames = frames;
            }
        }
    }
    Ok(Some(contents))
}

/// Removes the spool in `folder`, saying why.
pub(crate) fn discard(folder: &Path, why: &str) {
    let path = file(folder);
    match std::fs::remove_file(&path) {
        Ok(()) => tracing::info!(file = ?path, why, "spool discarded"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(file = ?path, error = %e, why, "could not remove the spool"),
    }
}

/// Appends to a spool file.
pub(crate) struct Writer {
    path: PathBuf,
    out: BufWriter<File>,
    /// Bytes in the file, written or buffered.
    len: u64,
    /// Whether something was written since the last fsync.
    unsynced: bool,
    last_sync: Instant,
    boundary: Boundary,
    end: Lsn,
}

impl Writer {
    /// Creates the spool file in `folder` (0600), replacing any.
    pub(crate) fn create(folder: &Path, header: &Header) -> Result<Writer, SpoolError> {
        std::fs::create_dir_all(folder).map_err(io("create the folder of", &file(folder)))?;
        let path = file(folder);
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let f = options.open(&path).map_err(io("create", &path))?;
        let bytes = encode_header(header);
        let mut w = Writer {
            len: bytes.len() as u64,
            out: BufWriter::with_capacity(256 << 10, f),
            path,
            unsynced: true,
            last_sync: Instant::now(),
            boundary: Boundary::default(),
            end: header.start,
        };
        w.out.write_all(&bytes).map_err(io("write", &w.path))?;
        w.sync()?;
        Ok(w)
    }

    /// Opens the scanned spool in `folder` for appending after its last mark (what follows it
    /// is cut off).
    pub(crate) fn append(folder: &Path, contents: &Contents) -> Result<Writer, SpoolError> {
        let path = file(folder);
        let mut f = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io("open", &path))?;
        f.set_len(contents.len).map_err(io("truncate", &path))?;
        f.seek(SeekFrom::End(0)).map_err(io("seek", &path))?;
        f.sync_data().map_err(io("fsync", &path))?;
        Ok(Writer {
            path,
            out: BufWriter::with_capacity(256 << 10, f),
            len: contents.len,
            unsynced: false,
            last_sync: Instant::now(),
            boundary: Boundary::default(),
            end: contents.end,
        })
    }

    /// Bytes in the file.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The end of the last marked commit.
    pub(crate) fn end(&self) -> Lsn {
        self.end
    }

    fn record(&mut self, kind: u8, lsn: Lsn, payload: &[u8]) -> Result<(), SpoolError> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&l| l <= MAX_PAYLOAD)
            .ok_or_else(|| SpoolError::Io {
                op: "write",
                path: self.path.clone(),
                source: std::io::Error::other("a message larger than a spool record can hold"),
            })?;
        let mut head = [0u8; RECORD_HEADER];
        head[0] = kind;
        head[1..9].copy_from_slice(&lsn.0.to_be_bytes());
        head[9..13].copy_from_slice(&len.to_be_bytes());
        head[13..21].copy_from_slice(&checksum(kind, lsn, payload).to_be_bytes());
        self.out.write_all(&head).map_err(io("write", &self.path))?;
        self.out
            .write_all(payload)
            .map_err(io("write", &self.path))?;
        self.len += (RECORD_HEADER + payload.len()) as u64;
        self.unsynced = true;
        Ok(())
    }

    /// Appends one `XLogData` payload; after a commit that leaves nothing open, a mark too,
    /// and an fsync when the last one is [`SYNC_EVERY`] old.
    pub(crate) fn frame(&mut self, wal_start: Lsn, data: &[u8]) -> Result<(), SpoolError> {
        self.record(KIND_FRAME, wal_start, data)?;
        if let Some(end) = self.boundary.observe(data) {
            self.record(KIND_MARK, end, &[])?;
            self.end = end;
            if self.last_sync.elapsed() >= SYNC_EVERY {
                self.sync()?;
            }
        }
        Ok(())
    }

    /// Whether the last fsync is older than `age`.
    pub(crate) fn synced_before(&self, age: Duration) -> bool {
        self.last_sync.elapsed() >= age
    }

    /// Writes out and fsyncs what was appended.
    pub(crate) fn sync(&mut self) -> Result<(), SpoolError> {
        if self.unsynced {
            self.out.flush().map_err(io("write", &self.path))?;
            self.out
                .get_ref()
                .sync_data()
                .map_err(io("fsync", &self.path))?;
            self.unsynced = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }
}

/// Where transactions begin and end in the `pgoutput` stream, read from each message's first
/// bytes: a commit after which no transaction and no streamed transaction is open is a safe
/// place to stop and start again.
#[derive(Debug, Default)]
struct Boundary {
    in_tx: bool,
    /// Streamed transactions (protocol v2+) begun and not yet committed or aborted.
    streams: HashSet<u32>,
}

impl Boundary {
    /// The end LSN of the commit `data` carries, when nothing is open after it.
    fn observe(&mut self, data: &[u8]) -> Option<Lsn> {
        let (&tag, rest) = data.split_first()?;
        let xid = || rest.get(..4).map(be_u32);
        let end = match tag {
            b'B' => {
                self.in_tx = true;
                None
            }
            // Commit: flags u8, commit LSN, end LSN.
            b'C' => {
                self.in_tx = false;
                rest.get(9..17).map(|b| Lsn(be_u64(b)))
            }
            // Stream Start: xid, first-segment flag.
            b'S' => {
                if let Some(x) = xid() {
                    self.streams.insert(x);
                }
                None
            }
            // Stream Commit: xid, flags u8, commit LSN, end LSN.
            b'c' => {
                if let Some(x) = xid() {
                    self.streams.remove(&x);
                }
                rest.get(13..21).map(|b| Lsn(be_u64(b)))
            }
            // Stream Abort: xid, subtransaction xid (the same for the whole transaction).
            b'A' => {
                if let (Some(x), Some(sub)) = (xid(), rest.get(4..8).map(be_u32)) {
                    if x == sub {
                        self.streams.remove(&x);
                    }
                }
                None
            }
            _ => None,
        };
        end.filter(|_| !self.in_tx && self.streams.is_empty())
    }
}

/// Reads a spool's frames back, up to its last mark.
pub(crate) struct Replay {
    path: PathBuf,
    input: BufReader<File>,
    offset: u64,
    len: u64,
    /// The spool's end: where the live stream starts.
    pub(crate) end: Lsn,
    /// The protocol version of its frames.
    pub(crate) proto_version: u32,
}

impl Replay {
    /// Opens the scanned spool in `folder`.
    pub(crate) fn open(folder: &Path, contents: &Contents) -> Result<Replay, SpoolError> {
        let path = file(folder);
        let f = File::open(&path).map_err(io("open", &path))?;
        let mut input = BufReader::with_capacity(256 << 10, f);
        let Some((header, offset)) = read_header(&mut input, &path)? else {
            return Err(SpoolError::Corrupt {
                path,
                offset: 0,
                why: "its header is gone".to_owned(),
            });
        };
        Ok(Replay {
            path,
            input,
            offset,
            len: contents.len,
            end: contents.end,
            proto_version: header.proto_version,
        })
    }

    /// The next frame, `None` after the last mark.
    pub(crate) fn next_frame(&mut self) -> Result<Option<(Lsn, Bytes)>, SpoolError> {
        while self.offset < self.len {
            let Some((record, size)) = read_record(&mut self.input, &self.path, self.offset)?
            else {
                return Err(SpoolError::Corrupt {
                    path: self.path.clone(),
                    offset: self.offset,
                    why: "it is shorter than when it was scanned".to_owned(),
                });
            };
            self.offset += size;
            if let Record::Frame(lsn, data) = record {
                return Ok(Some((lsn, data)));
            }
        }
        Ok(None)
    }

    /// The file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// The spool in `folder` to replay before the live stream, when it continues green: `green`
/// is the highest position green is known to hold everything before (the appliers' origin
/// progress, or the slot guard's record when that is higher: it records only what was durable
/// on green, or an idle stream's position), `system_identifier` blue's as the guard recorded
/// it. Any other spool is removed, with the reason logged.
pub(crate) fn prepare(
    folder: &Path,
    green: Lsn,
    system_identifier: Option<&str>,
) -> Result<Option<Replay>, SpoolError> {
    let Some(contents) = scan(folder)? else {
        return Ok(None);
    };
    let why = if contents.end <= green {
        "green holds everything in it"
    } else if contents.header.start > green {
        "it starts after green's position: transactions in between are not in it"
    } else if system_identifier.is_some_and(|id| id != contents.header.system_identifier) {
        "another blue system wrote it"
    } else {
        tracing::info!(
            file = ?file(folder),
            start = %contents.header.start,
            end = %contents.end,
            green = %green,
            frames = contents.frames,
            "replaying the spool: it continues green's position"
        );
        return Replay::open(folder, &contents).map(Some);
    };
    tracing::info!(start = %contents.header.start, end = %contents.end, green = %green, "the spool does not continue green's position");
    discard(folder, why);
    Ok(None)
}

mod outage;
pub(in crate::sync) use outage::{green_answers, spool_while_green_down};

#[cfg(test)]
mod tests;
