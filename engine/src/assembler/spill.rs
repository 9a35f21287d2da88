//! Spill files: a transaction's changes on disk once the assembler's memory limit is passed,
//! written by the assembler and read back, in order and once, by [`SpillReader`].
//!
//! # Format
//!
//! A file is a sequence of records, each `u32 length | u32 subxid | payload` (big-endian), where
//! the payload is one `pgoutput` message encoded with
//! [`encode`](fn@blueshift_decoder::pgoutput::encode) outside a streamed block (protocol 1 form):
//!
//! - a **Relation** record carries a relation description a later change refers to. Relation
//!   records are numbered 0, 1, 2, … in file order; the subxid field is unused (0).
//! - an **Insert / Update / Delete / Truncate** record is one change of subtransaction `subxid`,
//!   whose relation OID field holds the *number of the Relation record* it refers to, not the
//!   table's OID.
//!
//! The writer gives each distinct `Arc<RelationInfo>` it meets (by pointer, holding the `Arc`
//! so the address cannot be reused) one Relation record, written just before the first change
//! that refers to it. Reading back, each Relation record becomes one new `Arc<RelationInfo>`
//! and each change gets the one its record names. So every change comes back with a relation
//! description equal to the one it was written with, whatever Relation messages of other
//! transactions arrived meanwhile, and changes that shared an `Arc` share one again.
//!
//! A subtransaction aborted while its transaction is spilled is not rewritten: the writer
//! remembers, per aborted subxid, how many change records the file held at the abort, and the
//! reader skips that subxid's records below that count — exactly the changes an in-memory
//! buffer would have removed at that moment.
//!
//! Files are named `blueshift-spill-<xid>-<n>.spill`; a file is deleted when its writer or
//! reader is dropped, and leftovers of a crashed run are removed when an assembler starts.
//!
//! # Privacy
//!
//! Spill files hold blue's row data. The folder is blueshift's own ([`prepare_dir`]): created
//! with mode `0700`, or, when it exists, accepted only as a real folder (not a symlink) owned
//! by this process's user, and narrowed to `0700`; every file is created `0600`
//! (`O_EXCL`, never following a planted file). The folder is removed when its assembler drops.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use blueshift_applier::{Change, SpilledChanges};
use blueshift_decoder::pgoutput::{
    decode_message, encode, tag, DecodeContext, DeleteBody, EncodeError, InsertBody,
    PgOutputMessage, ProtocolVersion, RelationBody, TruncateBody, UpdateBody,
};
use blueshift_decoder::relation::RelationInfo;
use blueshift_decoder::{Oid, Xid};
use bytes::{BufMut, Bytes, BytesMut};

/// Start of every spill file's name.
const FILE_PREFIX: &str = "blueshift-spill-";
/// End of every spill file's name.
const FILE_SUFFIX: &str = ".spill";
/// Bytes of a record header: length and subxid.
const HEADER_LEN: usize = 8;
/// Largest payload accepted on read-back: PostgreSQL's own limit for one message (1 GiB).
const MAX_RECORD_LEN: usize = 1 << 30;
/// Buffer size of the writer and the reader.
const IO_BUFFER: usize = 64 * 1024;

/// The name of the spill file number `n` of transaction `xid`.
pub(super) fn file_name(xid: Xid, n: u64) -> String {
    format!("{FILE_PREFIX}{xid}-{n}{FILE_SUFFIX}")
}

/// Makes `dir` a private folder of this process's user: created `0700` (its parents as usual)
/// when missing; when present it must be a folder, not a symlink, owned by this user, and its
/// mode is narrowed to `0700`. Anything else is an error: another user could read or swap the
/// files.
pub(super) fn prepare_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = fs::symlink_metadata(dir)?;
    if !meta.file_type().is_dir() {
        return Err(io::Error::other(
            "it exists but is not a folder (a symlink or a file): remove it",
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(io::Error::other(format!(
            "it belongs to user id {}, not to this process's user id {me}: remove it, or choose \
             another folder",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Removes every spill file in `dir` (files named like [`file_name`]'s); returns how many.
/// Other files are left alone.
pub(super) fn remove_leftovers(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(FILE_PREFIX)
            && name.ends_with(FILE_SUFFIX)
            && entry.file_type()?.is_file()
        {
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Claims the spill folder of one sync for this process: an exclusive lock on the file `lock`
/// (beside the folder, which comes and goes with each attempt), held while the returned file is
/// open. `None` when another process holds it — another sync with the same slot name on this
/// host, which would remove or overwrite this one's spill files. The file is opened without
/// following a symlink (the default folder is the shared temporary one).
pub(crate) fn claim(lock: &Path) -> io::Result<Option<fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = lock.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(lock)?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(file)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Owns a spill file's path and deletes the file when dropped.
#[derive(Debug)]
struct FileGuard {
    path: PathBuf,
}

impl Drop for FileGuard {
    fn drop(&mut self) {
        if let Err(error) = fs::remove_file(&self.path) {
            if error.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), %error, "cannot remove spill file");
            }
        }
    }
}

/// Why a change could not be written.
#[derive(Debug)]
pub(super) enum WriteError {
    Io(io::Error),
    Encode(EncodeError),
}

/// Appends one transaction's changes to its spill file.
#[derive(Debug)]
pub(super) struct SpillWriter {
    out: BufWriter<File>,
    guard: FileGuard,
    /// The relations written so far, by record number; held so their addresses stay unique.
    relations: Vec<Arc<RelationInfo>>,
    /// Record number by the address of the `Arc`'s value.
    relation_ids: HashMap<RelationKey, u32>,
    /// Change records written.
    records: u64,
    /// Aborted subxids: their records below this count are skipped on read-back.
    aborted: HashMap<Xid, u64>,
    scratch: BytesMut,
}

/// The address of an `Arc<RelationInfo>`'s value: only compared, never turned back into a
/// pointer; the `Arc`s held in [`SpillWriter::relations`] keep each address unique. (A raw
/// pointer would make the writer `!Send`.)
type RelationKey = usize;

impl SpillWriter {
    /// Creates `dir/name`; fails if it exists.
    pub(super) fn create(dir: &Path, name: &str) -> io::Result<SpillWriter> {
        let path = dir.join(name);
        let file = std::os::unix::fs::OpenOptionsExt::mode(
            OpenOptions::new().read(true).write(true).create_new(true),
            0o600,
        )
        .open(&path)?;
        Ok(SpillWriter {
            out: BufWriter::with_capacity(IO_BUFFER, file),
            guard: FileGuard { path },
            relations: Vec::new(),
            relation_ids: HashMap::new(),
            records: 0,
            aborted: HashMap::new(),
            scratch: BytesMut::new(),
        })
    }

    /// The file's path.
    pub(super) fn path(&self) -> &Path {
        &self.guard.path
    }

    /// Appends `change` of subtransaction `subxid`; returns the bytes written.
    pub(super) fn write(&mut self, subxid: Xid, change: Change) -> Result<u64, WriteError> {
        let mut written = 0;
        let message = match change {
            Change::Insert { relation, new } => PgOutputMessage::Insert(InsertBody {
                xid: None,
                relation: self.relation_id(&relation, &mut written)?,
                new,
            }),
            Change::Update { relation, old, new } => PgOutputMessage::Update(UpdateBody {
                xid: None,
                relation: self.relation_id(&relation, &mut written)?,
                old,
                new,
            }),
            Change::Delete { relation, old } => PgOutputMessage::Delete(DeleteBody {
                xid: None,
                relation: self.relation_id(&relation, &mut written)?,
                old,
            }),
            Change::Truncate {
                relations,
                cascade,
                restart_identity,
            } => {
                let mut ids = Vec::with_capacity(relations.len());
                for relation in &relations {
                    ids.push(self.relation_id(relation, &mut written)?);
                }
                PgOutputMessage::Truncate(TruncateBody {
                    xid: None,
                    cascade,
                    restart_identity,
                    relations: ids,
                })
            }
        };
        written += self.write_record(subxid, &message)?;
        self.records += 1;
        Ok(written)
    }

    /// The record number of `relation`, writing its Relation record first when new.
    fn relation_id(
        &mut self,
        relation: &Arc<RelationInfo>,
        written: &mut u64,
    ) -> Result<Oid, WriteError> {
        let key: RelationKey = Arc::as_ptr(relation) as usize;
        if let Some(id) = self.relation_ids.get(&key) {
            return Ok(Oid(*id));
        }
        let id = u32::try_from(self.relations.len()).map_err(|_| {
            WriteError::Encode(EncodeError::TooMany {
                field: "relations in one spill file",
                count: self.relations.len(),
                max: u32::MAX as usize,
            })
        })?;
        let name = relation.name();
        let body = RelationBody {
            xid: None,
            oid: relation.oid(),
            namespace: name.namespace.clone(),
            name: name.name.clone(),
            replica_identity: relation.replica_identity(),
            columns: relation.columns().to_vec(),
        };
        *written += self.write_record(Xid(0), &PgOutputMessage::Relation(body))?;
        self.relations.push(Arc::clone(relation));
        self.relation_ids.insert(key, id);
        Ok(Oid(id))
    }

    fn write_record(&mut self, subxid: Xid, message: &PgOutputMessage) -> Result<u64, WriteError> {
        self.scratch.clear();
        self.scratch.put_u32(0);
        self.scratch.put_u32(subxid.0);
        encode(message, false, &mut self.scratch).map_err(WriteError::Encode)?;
        let payload = self.scratch.len() - HEADER_LEN;
        let len = u32::try_from(payload)
            .ok()
            .filter(|_| payload <= MAX_RECORD_LEN)
            .ok_or(WriteError::Encode(EncodeError::TooLong {
                field: "spill record",
                len: payload,
                max: MAX_RECORD_LEN,
            }))?;
        self.scratch[..4].copy_from_slice(&len.to_be_bytes());
        self.out.write_all(&self.scratch).map_err(WriteError::Io)?;
        Ok(self.scratch.len() as u64)
    }

    /// Marks subtransaction `subxid` aborted: its changes written so far are skipped on
    /// read-back.
    pub(super) fn abort_subxact(&mut self, subxid: Xid) {
        self.aborted.insert(subxid, self.records);
    }

    /// Flushes the file and turns it into its reader, positioned at the start.
    ///
    /// The number of surviving changes is counted by one pass over the record headers rather
    /// than kept per subxid while writing: a transaction may have millions of subtransactions,
    /// and memory must not grow with them.
    pub(super) fn finish(self) -> io::Result<SpillReader> {
        let SpillWriter {
            out,
            guard,
            aborted,
            relations: described,
            ..
        } = self;
        let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        let mut input = BufReader::with_capacity(IO_BUFFER, file);
        input.seek(SeekFrom::Start(0))?;
        let len = count_surviving(&mut input, &aborted, &guard.path)?;
        input.seek(SeekFrom::Start(0))?;
        Ok(SpillReader {
            input,
            guard,
            described,
            relations: Vec::new(),
            aborted,
            records: 0,
            len,
            returned: 0,
        })
    }
}

/// Whether change record number `index`, of subtransaction `subxid`, was aborted.
fn is_aborted(aborted: &HashMap<Xid, u64>, subxid: Xid, index: u64) -> bool {
    aborted.get(&subxid).is_some_and(|bound| index < *bound)
}

/// Counts the change records not aborted, reading only each record's header and tag.
fn count_surviving(
    input: &mut BufReader<File>,
    aborted: &HashMap<Xid, u64>,
    path: &Path,
) -> io::Result<u64> {
    let (mut index, mut len) = (0u64, 0u64);
    while !input.fill_buf()?.is_empty() {
        let mut header = [0u8; HEADER_LEN + 1];
        input.read_exact(&mut header)?;
        let [l0, l1, l2, l3, s0, s1, s2, s3, tag] = header;
        let rest = i64::from(u32::from_be_bytes([l0, l1, l2, l3])) - 1;
        if rest < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("spill file {path:?} is corrupt: an empty record"),
            ));
        }
        input.seek_relative(rest)?;
        if tag == tag::RELATION {
            continue;
        }
        if !is_aborted(aborted, Xid(u32::from_be_bytes([s0, s1, s2, s3])), index) {
            len += 1;
        }
        index += 1;
    }
    Ok(len)
}

/// The changes of a spilled transaction, read back in order; deletes its file when dropped.
#[derive(Debug)]
pub struct SpillReader {
    input: BufReader<File>,
    guard: FileGuard,
    /// The relation descriptions the writer wrote, as the stream gave them.
    described: Vec<Arc<RelationInfo>>,
    /// Relation descriptions read so far, by record number.
    relations: Vec<Arc<RelationInfo>>,
    aborted: HashMap<Xid, u64>,
    /// Change records read so far (skipped ones included).
    records: u64,
    len: u64,
    returned: u64,
}

impl SpillReader {
    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.guard.path
    }

    fn corrupt(&self, what: String) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "spill file {:?} is corrupt: {what} — it was changed or truncated while in use",
                self.guard.path
            ),
        )
    }

    /// The next record: its subxid and message; `None` at a clean end of file.
    fn next_record(&mut self) -> io::Result<Option<(Xid, PgOutputMessage)>> {
        if self.input.fill_buf()?.is_empty() {
            return Ok(None);
        }
        let mut header = [0u8; HEADER_LEN];
        self.input.read_exact(&mut header)?;
        let [l0, l1, l2, l3, s0, s1, s2, s3] = header;
        let len = usize::try_from(u32::from_be_bytes([l0, l1, l2, l3]))
            .ok()
            .filter(|len| *len <= MAX_RECORD_LEN)
            .ok_or_else(|| self.corrupt("a record is longer than 1 GiB".to_owned()))?;
        let subxid = Xid(u32::from_be_bytes([s0, s1, s2, s3]));
        let mut payload = vec![0u8; len];
        self.input.read_exact(&mut payload)?;
        let message = decode_message(
            Bytes::from(payload),
            DecodeContext::new(ProtocolVersion::V1),
        )
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(Some((subxid, message)))
    }

    fn relation(&self, id: Oid) -> io::Result<Arc<RelationInfo>> {
        usize::try_from(id.0)
            .ok()
            .and_then(|i| self.relations.get(i))
            .cloned()
            .ok_or_else(|| {
                self.corrupt(format!(
                    "a change names relation record {id}, not yet written"
                ))
            })
    }
}

impl SpilledChanges for SpillReader {
    fn next_change(&mut self) -> io::Result<Option<Change>> {
        loop {
            let Some((subxid, message)) = self.next_record()? else {
                if self.returned != self.len {
                    return Err(self.corrupt(format!(
                        "it ends after {} of {} changes",
                        self.returned, self.len
                    )));
                }
                return Ok(None);
            };
            let change = match message {
                PgOutputMessage::Relation(body) => {
                    self.relations
                        .push(Arc::new(RelationInfo::from_message(&body)));
                    continue;
                }
                PgOutputMessage::Insert(m) => Change::Insert {
                    relation: self.relation(m.relation)?,
                    new: m.new,
                },
                PgOutputMessage::Update(m) => Change::Update {
                    relation: self.relation(m.relation)?,
                    old: m.old,
                    new: m.new,
                },
                PgOutputMessage::Delete(m) => Change::Delete {
                    relation: self.relation(m.relation)?,
                    old: m.old,
                },
                PgOutputMessage::Truncate(m) => Change::Truncate {
                    relations: m
                        .relations
                        .iter()
                        .map(|id| self.relation(*id))
                        .collect::<io::Result<_>>()?,
                    cascade: m.cascade,
                    restart_identity: m.restart_identity,
                },
                other => return Err(self.corrupt(format!("it holds a {} record", other.name()))),
            };
            let index = self.records;
            self.records += 1;
            if is_aborted(&self.aborted, subxid, index) {
                continue;
            }
            if self.returned == self.len {
                return Err(self.corrupt(format!("it holds more than {} changes", self.len)));
            }
            self.returned += 1;
            return Ok(Some(change));
        }
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn rewind(&mut self) -> io::Result<()> {
        self.input.seek(SeekFrom::Start(0))?;
        self.relations.clear();
        self.records = 0;
        self.returned = 0;
        Ok(())
    }

    fn relations(&self) -> Vec<Arc<RelationInfo>> {
        self.described.clone()
    }
}
