use super::*;

/// A pgoutput Begin message (its contents do not matter to the spool).
fn begin() -> Vec<u8> {
    let mut m = vec![b'B'];
    m.extend_from_slice(&[0u8; 20]);
    m
}

/// A pgoutput Commit message ending at `end`.
fn commit(commit: u64, end: u64) -> Vec<u8> {
    let mut m = vec![b'C', 0];
    m.extend_from_slice(&commit.to_be_bytes());
    m.extend_from_slice(&end.to_be_bytes());
    m.extend_from_slice(&0i64.to_be_bytes());
    m
}

fn insert(n: u8) -> Vec<u8> {
    vec![b'I', 0, 0, 0, n, b'N']
}

fn stream_start(xid: u32) -> Vec<u8> {
    let mut m = vec![b'S'];
    m.extend_from_slice(&xid.to_be_bytes());
    m.push(1);
    m
}

fn stream_commit(xid: u32, commit: u64, end: u64) -> Vec<u8> {
    let mut m = vec![b'c'];
    m.extend_from_slice(&xid.to_be_bytes());
    m.push(0);
    m.extend_from_slice(&commit.to_be_bytes());
    m.extend_from_slice(&end.to_be_bytes());
    m.extend_from_slice(&0i64.to_be_bytes());
    m
}

fn header() -> Header {
    Header {
        proto_version: 4,
        start: Lsn(100),
        system_identifier: "7300000000000000001".to_owned(),
    }
}

/// Writes one transaction per `(commit, end)`, each with an insert.
fn write_transactions(w: &mut Writer, txs: &[(u64, u64)]) {
    for &(c, e) in txs {
        w.frame(Lsn(c - 3), &begin()).unwrap();
        w.frame(Lsn(c - 2), &insert(1)).unwrap();
        w.frame(Lsn(c), &commit(c, e)).unwrap();
    }
}

fn frames(folder: &Path) -> Vec<(Lsn, Bytes)> {
    let contents = scan(folder).unwrap().unwrap();
    let mut replay = Replay::open(folder, &contents).unwrap();
    let mut out = Vec::new();
    while let Some(f) = replay.next_frame().unwrap() {
        out.push(f);
    }
    out
}

#[test]
fn frames_come_back_in_order_up_to_the_last_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::create(dir.path(), &header()).unwrap();
    write_transactions(&mut w, &[(110, 120), (130, 140)]);
    // A transaction cut by the end of the outage: not part of the spool.
    w.frame(Lsn(150), &begin()).unwrap();
    w.frame(Lsn(151), &insert(9)).unwrap();
    w.sync().unwrap();
    let contents = scan(dir.path()).unwrap().unwrap();
    assert_eq!(contents.header, header());
    assert_eq!(contents.end, Lsn(140));
    assert_eq!(contents.frames, 6);
    let got = frames(dir.path());
    assert_eq!(got.len(), 6);
    assert_eq!(got[0].0, Lsn(107));
    assert_eq!(&got[5].1[..], &commit(130, 140)[..]);
    // Appending cuts the open transaction off and continues after the last mark.
    let mut w = Writer::append(dir.path(), &contents).unwrap();
    assert_eq!(w.end(), Lsn(140));
    write_transactions(&mut w, &[(170, 180)]);
    w.sync().unwrap();
    let got = frames(dir.path());
    assert_eq!(got.len(), 9);
    assert_eq!(got[6].0, Lsn(167), "the cut transaction's frames are gone");
    assert_eq!(scan(dir.path()).unwrap().unwrap().end, Lsn(180));
}

#[test]
fn a_commit_inside_an_open_streamed_transaction_is_no_place_to_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::create(dir.path(), &header()).unwrap();
    w.frame(Lsn(101), &stream_start(77)).unwrap();
    w.frame(Lsn(102), &insert(1)).unwrap();
    w.frame(Lsn(103), b"E").unwrap();
    // Another transaction commits while 77 is still open.
    write_transactions(&mut w, &[(110, 120)]);
    w.sync().unwrap();
    assert_eq!(
        scan(dir.path()).unwrap().unwrap().end,
        Lsn(100),
        "no mark yet"
    );
    w.frame(Lsn(130), &stream_commit(77, 130, 135)).unwrap();
    w.sync().unwrap();
    let contents = scan(dir.path()).unwrap().unwrap();
    assert_eq!(contents.end, Lsn(135));
    assert_eq!(contents.frames, 7);
}

#[test]
fn a_torn_tail_is_cut_at_the_last_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::create(dir.path(), &header()).unwrap();
    write_transactions(&mut w, &[(110, 120), (130, 140)]);
    w.sync().unwrap();
    drop(w);
    let path = file(dir.path());
    let len = std::fs::metadata(&path).unwrap().len();
    // The last mark record and half of the commit before it are gone (a crash mid-write).
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - (RECORD_HEADER as u64) - 10).unwrap();
    let contents = scan(dir.path()).unwrap().unwrap();
    assert_eq!(contents.end, Lsn(120));
    assert_eq!(frames(dir.path()).len(), 3);
}

#[test]
fn a_corrupt_record_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::create(dir.path(), &header()).unwrap();
    write_transactions(&mut w, &[(110, 120), (130, 140)]);
    w.sync().unwrap();
    drop(w);
    let path = file(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 40;
    bytes[at] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let e = scan(dir.path()).unwrap_err();
    assert!(matches!(e, SpoolError::Corrupt { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains(&format!("{path:?}")), "{text}");
    assert!(text.contains("remove the file"), "{text}");
}

#[test]
fn a_file_that_is_not_a_spool_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(file(dir.path()), b"something else entirely, not a spool").unwrap();
    assert!(matches!(
        scan(dir.path()),
        Err(SpoolError::Corrupt { offset: 0, .. })
    ));
}

#[test]
fn a_spool_is_replayed_only_when_it_continues_green() {
    let dir = tempfile::tempdir().unwrap();
    let write = || {
        let mut w = Writer::create(dir.path(), &header()).unwrap();
        write_transactions(&mut w, &[(110, 120), (130, 140)]);
        w.sync().unwrap();
    };
    let id = Some("7300000000000000001");
    write();
    // Green holds up to 110: the spool starts at 100 and ends at 140.
    let replay = prepare(dir.path(), Lsn(110), id).unwrap().unwrap();
    assert_eq!(replay.end, Lsn(140));
    assert_eq!(replay.proto_version, 4);
    // Green is behind the spool's start: a gap, discarded.
    assert!(prepare(dir.path(), Lsn(90), id).unwrap().is_none());
    assert!(!file(dir.path()).exists());
    write();
    // Green holds all of it.
    assert!(prepare(dir.path(), Lsn(140), id).unwrap().is_none());
    assert!(!file(dir.path()).exists());
    write();
    // Another blue.
    assert!(prepare(dir.path(), Lsn(110), Some("42")).unwrap().is_none());
    assert!(!file(dir.path()).exists());
    // No spool at all.
    assert!(prepare(dir.path(), Lsn(110), id).unwrap().is_none());
}

#[test]
fn spool_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    Writer::create(dir.path(), &header()).unwrap();
    let mode = std::fs::metadata(file(dir.path()))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
