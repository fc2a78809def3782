//! The journal on both stores: chain, rotation, torn tails, tampering, group commit, the
//! writer lock; and the memory store's injected faults.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::format::{segment_name, FRAME_BODY_FIXED_BYTES, SEGMENT_HEADER_BYTES};
use super::*;

const BODY_FIXED: usize = FRAME_BODY_FIXED_BYTES;
const HEADER_LEN: usize = SEGMENT_HEADER_BYTES;

/// The segment files of the journal in `dir`, in order.
fn segments(dir: &Path) -> Vec<(u64, PathBuf)> {
    let store = FileStorage::new(dir);
    store
        .segments()
        .unwrap()
        .into_iter()
        .map(|first| (first, dir.join("journal").join(segment_name(first))))
        .collect()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("warden-journal-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    d
}

async fn write_n(dir: &Path, n: u64, segment_bytes: u64) -> Vec<(u64, Hash)> {
    let mut cfg = JournalConfig::new(dir);
    cfg.segment_bytes = segment_bytes;
    let (j, _) = Journal::open(cfg, |_| {}).unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        out.push(
            j.append(
                EntryKind::Decision,
                1_000 + i,
                format!("{{\"i\":{i}}}").into_bytes(),
            )
            .await
            .unwrap(),
        );
    }
    j.shutdown().await;
    out
}

#[tokio::test]
async fn entries_chain_across_segments_and_reopen_continues_the_chain() {
    let dir = tmp("chain");
    let acks = write_n(&dir, 500, 4_096).await;
    assert_eq!(acks.last().unwrap().0, 500);
    let report = verify(&dir).unwrap();
    assert_eq!(report.entries, 500);
    assert!(report.segments > 5, "rotated: {}", report.segments);
    assert_eq!(report.head, Some(*acks.last().unwrap()));
    // Reopen: replay sees every entry, and new appends continue the chain.
    let mut seen = Vec::new();
    let (j, open) = Journal::open(JournalConfig::new(&dir), |e| {
        seen.push((e.seq, e.payload.clone()))
    })
    .unwrap();
    assert_eq!(open.truncated_bytes, 0);
    assert_eq!(seen.len(), 500);
    assert_eq!(seen[41].1, b"{\"i\":41}");
    let (seq, _) = j.append(EntryKind::Note, 9, b"x".to_vec()).await.unwrap();
    assert_eq!(seq, 501);
    // Acknowledged means written and synced: it is on disk already.
    assert_eq!(verify(&dir).unwrap().entries, 501);
    drop(j);
    fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_torn_tail_is_cut_back_and_reported() {
    let dir = tmp("torn");
    write_n(&dir, 20, 1 << 20).await;
    let (_, seg) = segments(&dir).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    // Half of the last frame is lost in a crash.
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let report = verify(&dir).unwrap();
    assert_eq!(report.entries, 19);
    assert!(report.torn_tail_bytes > 0);
    let (j, open) = Journal::open(JournalConfig::new(&dir), |_| {}).unwrap();
    assert_eq!(open.verified.entries, 19);
    assert!(open.truncated_bytes > 0);
    assert_eq!(j.append(EntryKind::Note, 1, vec![]).await.unwrap().0, 20);
    fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_flipped_byte_in_the_middle_is_reported_with_its_entry() {
    let dir = tmp("tamper");
    write_n(&dir, 50, 1 << 20).await;
    let (_, seg) = segments(&dir).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    // Entry 10's payload starts after the header and nine frames.
    let frame = 8 + BODY_FIXED + b"{\"i\":0}".len();
    let at = HEADER_LEN + 9 * frame + 8 + BODY_FIXED + 2;
    bytes[at] ^= 0x01;
    fs::write(&seg, &bytes).unwrap();
    match verify(&dir) {
        Err(JournalError::Corrupt { seq, reason, .. }) => {
            assert_eq!(seq, 10);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // Opening refuses too: corruption is never skipped.
    assert!(Journal::open(JournalConfig::new(&dir), |_| {}).is_err());
    fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_rewritten_entry_with_a_fixed_checksum_breaks_the_chain() {
    let dir = tmp("rewrite");
    write_n(&dir, 30, 1 << 20).await;
    let (_, seg) = segments(&dir).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    let frame = 8 + BODY_FIXED + b"{\"i\":0}".len();
    let off = HEADER_LEN + 4 * frame;
    let body_start = off + 8;
    bytes[body_start + BODY_FIXED + 2] = b'9';
    let crc = crc32fast::hash(&bytes[body_start..body_start + frame - 8]);
    bytes[off + 4..off + 8].copy_from_slice(&crc.to_le_bytes());
    fs::write(&seg, &bytes).unwrap();
    match verify(&dir) {
        Err(JournalError::Corrupt { seq, reason, .. }) => {
            assert_eq!(
                seq, 6,
                "entry 5 verifies alone; entry 6 no longer links to it"
            );
            assert!(reason.contains("chain"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn concurrent_appends_form_one_gapless_chain() {
    let dir = tmp("concurrent");
    let (j, _) = Journal::open(JournalConfig::new(&dir), |_| {}).unwrap();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let j = j.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..100 {
                seqs.push(
                    j.append(EntryKind::Decision, i, vec![t as u8; 10])
                        .await
                        .unwrap()
                        .0,
                );
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=800).collect::<Vec<u64>>());
    assert_eq!(verify(&dir).unwrap().entries, 800);
    fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn oversized_payloads_are_refused_and_change_nothing() {
    let dir = tmp("large");
    let (j, _) = Journal::open(JournalConfig::new(&dir), |_| {}).unwrap();
    let err = j
        .append(EntryKind::Note, 0, vec![0; ENTRY_PAYLOAD_BYTES_MAX + 1])
        .await
        .unwrap_err();
    assert!(matches!(err, JournalError::TooLarge(_)));
    assert_eq!(j.append(EntryKind::Note, 0, vec![]).await.unwrap().0, 1);
    fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn segments_stay_within_their_size_even_for_large_concurrent_groups() {
    let dir = tmp("rotate-groups");
    let mut cfg = JournalConfig::new(&dir);
    cfg.segment_bytes = 4_096;
    let (j, _) = Journal::open(cfg, |_| {}).unwrap();
    let mut tasks = Vec::new();
    for t in 0..64u8 {
        let j = j.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                j.append(EntryKind::Decision, i, vec![t; 40]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    j.shutdown().await;
    let frame = (8 + BODY_FIXED + 40) as u64;
    for (_, path) in segments(&dir) {
        let len = fs::metadata(&path).unwrap().len();
        assert!(len <= 4_096 + frame, "{} is {len} bytes", path.display());
    }
    assert_eq!(verify(&dir).unwrap().entries, 64 * 20);
    fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_second_writer_is_refused_and_a_half_made_segment_is_dropped() {
    let dir = tmp("lock");
    let (j, _) = Journal::open(JournalConfig::new(&dir), |_| {}).unwrap();
    j.append(EntryKind::Note, 1, vec![]).await.unwrap();
    let err = Journal::open(JournalConfig::new(&dir), |_| {}).unwrap_err();
    assert!(
        err.to_string()
            .contains("another writer holds this journal"),
        "{err}"
    );
    j.shutdown().await;
    // A crash while creating the next segment leaves only a temporary file behind.
    fs::write(
        dir.join("journal").join(format!("{}.tmp", segment_name(2))),
        b"WARD",
    )
    .unwrap();
    let (j, open) = Journal::open(JournalConfig::new(&dir), |_| {}).unwrap();
    assert_eq!(open.verified.entries, 1);
    assert_eq!(j.append(EntryKind::Note, 2, vec![]).await.unwrap().0, 2);
    j.shutdown().await;
    assert!(!dir
        .join("journal")
        .join(format!("{}.tmp", segment_name(2)))
        .exists());
    fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------
// The memory store, encoding failures and format versions
// ---------------------------------------------------------------------------------------

async fn write_n_in(store: &MemStorage, n: u64, segment_bytes: u64, fsync: FsyncMode) -> Journal {
    let mut cfg = JournalConfig::new("unused");
    cfg.segment_bytes = segment_bytes;
    cfg.fsync = fsync;
    let (j, _) = Journal::open_in(Arc::new(store.clone()), cfg, |_| {}).unwrap();
    for i in 0..n {
        j.append(
            EntryKind::Decision,
            1_000 + i,
            format!("{{\"i\":{i}}}").into_bytes(),
        )
        .await
        .unwrap();
    }
    j
}

fn reopen_mem(store: &MemStorage) -> Result<(Journal, OpenReport, Vec<Entry>), JournalError> {
    let mut seen = Vec::new();
    let (j, open) = Journal::open_in(Arc::new(store.clone()), JournalConfig::new("unused"), |e| {
        seen.push(e.clone())
    })?;
    Ok((j, open, seen))
}

#[tokio::test]
async fn a_journal_in_memory_chains_rotates_verifies_and_continues_after_reopen() {
    let store = MemStorage::new();
    let j = write_n_in(&store, 500, 4_096, FsyncMode::Always).await;
    j.shutdown().await;
    let report = read_storage(&store, |_| {}).unwrap();
    assert_eq!(report.entries, 500);
    assert!(report.segments > 5, "rotated: {}", report.segments);
    // The same entries make the same bytes as on disk.
    let dir = tmp("mem-same-bytes");
    write_n(&dir, 500, 4_096).await;
    assert_eq!(verify(&dir).unwrap().head, report.head);
    fs::remove_dir_all(&dir).unwrap();

    let (j, open, seen) = reopen_mem(&store).unwrap();
    assert_eq!(open.truncated_bytes, 0);
    assert_eq!(seen.len(), 500);
    assert_eq!(seen[41].payload, b"{\"i\":41}");
    assert!(seen.iter().all(|e| e.format == FORMAT_VERSION));
    assert_eq!(
        j.append(EntryKind::Note, 9, b"x".to_vec()).await.unwrap().0,
        501
    );
    assert_eq!(read_storage(&store, |_| {}).unwrap().entries, 501);
    j.shutdown().await;
}

#[tokio::test]
async fn a_torn_tail_in_memory_is_cut_back_as_on_disk() {
    // On disk: half of the last frame lost.
    let dir = tmp("torn-both");
    write_n(&dir, 20, 1 << 20).await;
    let (_, seg) = segments(&dir).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let (on_disk, disk_open) = Journal::open(JournalConfig::new(&dir), |_| {}).unwrap();

    // In memory: nothing synced after the header, then a power cut that keeps all but the
    // last 10 bytes written.
    let store = MemStorage::new();
    let j = write_n_in(&store, 20, 1 << 20, FsyncMode::Off).await;
    let unsynced = store.unsynced_bytes() as usize;
    assert!(unsynced > 0);
    store.crash(unsynced - 10);
    assert!(
        j.append(EntryKind::Note, 1, vec![]).await.is_err(),
        "the crashed writer is gone"
    );
    let (in_memory, mem_open, _) = reopen_mem(&store).unwrap();

    assert_eq!(mem_open, disk_open);
    assert_eq!(mem_open.verified.entries, 19);
    assert_eq!(mem_open.truncated_bytes, (8 + BODY_FIXED + 8 - 10) as u64);
    assert_eq!(
        in_memory
            .append(EntryKind::Note, 1, vec![])
            .await
            .unwrap()
            .0,
        20
    );
    assert_eq!(
        on_disk.append(EntryKind::Note, 1, vec![]).await.unwrap().0,
        20
    );
    in_memory.shutdown().await;
    on_disk.shutdown().await;
    fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_write_fault_fails_the_journal_and_leaves_no_part_of_the_group() {
    let store = MemStorage::new();
    let j = write_n_in(&store, 5, 1 << 20, FsyncMode::Always).await;
    // The next write is cut short after 20 bytes.
    store.inject(Faults {
        write_fails_after_bytes: Some(20),
        ..Faults::default()
    });
    let err = j
        .append(EntryKind::Note, 1, b"lost".to_vec())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("injected write fault"), "{err}");
    assert!(j.failure().is_some());
    store.inject(Faults::default());
    assert!(
        j.append(EntryKind::Note, 2, vec![]).await.is_err(),
        "a failed journal refuses everything after"
    );
    assert!(j.flush().await.is_err());
    j.shutdown().await;
    // The short write was cut back off the segment: five entries, no torn tail.
    store.crash(usize::MAX);
    let (j, open, seen) = reopen_mem(&store).unwrap();
    assert_eq!(open.verified.entries, 5);
    assert_eq!(open.truncated_bytes, 0);
    assert_eq!(seen.last().unwrap().payload, b"{\"i\":4}");
    j.shutdown().await;
}

#[tokio::test]
async fn a_sync_fault_fails_the_journal_and_nothing_unsynced_survives_a_crash() {
    let store = MemStorage::new();
    let j = write_n_in(&store, 3, 1 << 20, FsyncMode::Always).await;
    store.inject(Faults {
        sync_fails: true,
        ..Faults::default()
    });
    let err = j
        .append(EntryKind::Note, 1, b"lost".to_vec())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("injected sync fault"), "{err}");
    assert!(j.failure().is_some());
    store.crash(0);
    store.inject(Faults::default());
    let (j2, open, _) = reopen_mem(&store).unwrap();
    assert_eq!(
        open.verified.entries, 3,
        "only acknowledged entries survive"
    );
    j2.shutdown().await;
    j.shutdown().await;
}

#[tokio::test]
async fn one_writer_holds_a_memory_journal_until_it_stops_or_crashes() {
    let store = MemStorage::new();
    let j = write_n_in(&store, 1, 1 << 20, FsyncMode::Always).await;
    let err = reopen_mem(&store).unwrap_err();
    assert!(
        err.to_string()
            .contains("another writer holds this journal"),
        "{err}"
    );
    j.shutdown().await;
    let (j, _, _) = reopen_mem(&store).unwrap();
    store.crash(0);
    let (j2, open, _) = reopen_mem(&store).expect("a crash releases the lock");
    assert_eq!(open.verified.entries, 1);
    drop(j);
    j2.shutdown().await;
}

/// A value whose encoding always fails.
struct Unencodable;

impl Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this value cannot be encoded"))
    }
}

#[tokio::test]
async fn an_encoding_failure_fails_the_journal_and_writes_no_empty_entry() {
    let store = MemStorage::new();
    let j = write_n_in(&store, 2, 1 << 20, FsyncMode::Always).await;
    let err = j.submit_json(EntryKind::Note, 3, &Unencodable).unwrap_err();
    assert!(matches!(err, JournalError::Encode(_)), "{err:?}");
    assert!(
        j.failure().unwrap().contains("cannot be encoded"),
        "the journal failed"
    );
    assert!(j.submit(EntryKind::Note, 4, b"{}".to_vec()).is_err());
    let err = j
        .append_json(EntryKind::Note, 5, &Unencodable)
        .await
        .unwrap_err();
    assert!(matches!(err, JournalError::Encode(_)));
    j.shutdown().await;
    let report = read_storage(&store, |_| {}).unwrap();
    assert_eq!(
        report.entries, 2,
        "nothing was written in the refused entry's place"
    );
    // The recorder's and the snapshot's encoder report the failure the same way.
    let fitting = records::encode_fitting(&Unencodable, |_, _| {});
    assert!(fitting.is_err());
}

#[tokio::test]
async fn a_segment_of_a_later_format_version_is_refused_by_name() {
    let dir = tmp("newer");
    write_n(&dir, 3, 1 << 20).await;
    let (_, seg) = segments(&dir).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    bytes[7] = b'0' + FORMAT_VERSION + 1;
    let crc = crc32fast::hash(&bytes[..48]);
    bytes[48..52].copy_from_slice(&crc.to_le_bytes());
    fs::write(&seg, &bytes).unwrap();
    match verify(&dir) {
        Err(JournalError::NewerFormat { version, .. }) => {
            assert_eq!(version, FORMAT_VERSION + 1)
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        Journal::open(JournalConfig::new(&dir), |_| {}),
        Err(JournalError::NewerFormat { .. })
    ));
    fs::remove_dir_all(&dir).unwrap();
}

fn open_off(store: &MemStorage) -> Journal {
    let mut cfg = JournalConfig::new("unused");
    cfg.fsync = FsyncMode::Off;
    Journal::open_in(Arc::new(store.clone()), cfg, |_| {})
        .unwrap()
        .0
}

#[test]
fn with_fsync_off_the_waiting_caller_writes_its_group_and_the_chain_stays_whole() {
    let store = MemStorage::new();
    let j = open_off(&store);
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let j = j.clone();
            std::thread::spawn(move || {
                for i in 0..500u64 {
                    let seq = j.submit(EntryKind::Decision, i, vec![t; 16]).unwrap();
                    match j.write_through(seq) {
                        // Written when it returns: no writer thread to wait for.
                        Some(Ok(())) => assert!(j.head().0 >= seq),
                        // Another thread was writing: it takes this entry too.
                        None => assert!(eventually(|| j.head().0 >= seq)),
                        Some(Err(e)) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let seen: Vec<u64> = {
        let mut v = Vec::new();
        read_storage(&store, |e| v.push(e.seq)).unwrap();
        v
    };
    assert_eq!(seen, (1..=2_000).collect::<Vec<u64>>());
    // The other modes sync on the writer thread only.
    let always = MemStorage::new();
    let (ja, _) = Journal::open_in(Arc::new(always), JournalConfig::new("x"), |_| {}).unwrap();
    let seq = ja.submit(EntryKind::Note, 1, vec![]).unwrap();
    assert!(ja.write_through(seq).is_none());
}

/// Polls `cond` for up to 2 s.
fn eventually(cond: impl Fn() -> bool) -> bool {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < until {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    false
}

#[test]
fn with_fsync_off_entries_no_one_waits_for_are_written_by_the_thread_busy_or_asleep() {
    let store = MemStorage::new();
    let j = open_off(&store);
    let first = j.submit(EntryKind::Note, 1, b"a".to_vec()).unwrap();
    assert!(eventually(|| j.head().0 == first), "written while busy");
    // Past its quiet period the thread sleeps until a submit wakes it.
    std::thread::sleep(writer::OFF_POLL * (writer::OFF_QUIET_POLLS + 50));
    let second = j.submit(EntryKind::Note, 2, b"b".to_vec()).unwrap();
    assert!(eventually(|| j.head().0 == second), "written after a sleep");
}

#[tokio::test]
async fn with_fsync_off_a_stop_writes_what_is_queued_and_a_write_fault_fails_the_caller() {
    let store = MemStorage::new();
    let j = open_off(&store);
    for i in 0..10 {
        j.submit(EntryKind::Note, i, vec![1]).unwrap();
    }
    j.clone().shutdown().await;
    assert!(matches!(j.write_through(11), Some(Err(_))), "stopped");
    store.crash(usize::MAX);
    let (j, open, _) = reopen_mem(&store).unwrap();
    assert_eq!(open.verified.entries, 10);
    j.shutdown().await;

    let store = MemStorage::new();
    let j = open_off(&store);
    store.inject(Faults {
        write_fails_after_bytes: Some(20),
        ..Faults::default()
    });
    let seq = j.submit(EntryKind::Note, 1, b"lost".to_vec()).unwrap();
    let err = j.write_through(seq).unwrap().unwrap_err();
    assert!(err.to_string().contains("injected write fault"), "{err}");
    assert!(j.wait_durable(seq).await.is_err());
    j.shutdown().await;
}

/// Frame bytes of a `Note` entry with a `payload_len`-byte payload.
fn note_frame_bytes(payload_len: usize) -> u64 {
    (8 + BODY_FIXED + payload_len) as u64
}

#[test]
fn with_inline_writes_each_entry_is_written_or_refused_before_submit_returns() {
    let store = MemStorage::new();
    let mut cfg = JournalConfig::new("unused");
    cfg.inline_writes = true;
    let (j, _) = Journal::open_in(Arc::new(store.clone()), cfg, |_| {}).unwrap();
    for i in 1..=50u64 {
        assert_eq!(j.submit(EntryKind::Note, i, vec![7; 32]).unwrap(), i);
        // Acknowledged (synced: fsync always) on return; no writer thread to wait for.
        assert_eq!(j.head().0, i);
        assert_eq!(store.unsynced_bytes(), 0);
    }
    // The disk takes three more entries and a half: the fourth entry is the one refused,
    // and the journal has failed when its submit returns, whatever the writer thread does.
    store.inject(Faults {
        write_fails_after_bytes: Some(note_frame_bytes(32) * 3 + 10),
        ..Faults::default()
    });
    for i in 51..=53u64 {
        j.submit(EntryKind::Note, i, vec![7; 32]).unwrap();
        assert_eq!((j.head().0, j.failure()), (i, None));
    }
    j.submit(EntryKind::Note, 54, vec![7; 32]).unwrap();
    assert_eq!(j.head().0, 53);
    let why = j.failure().expect("failed when submit returned");
    assert!(why.contains("injected write fault"), "{why}");
    assert!(j.submit(EntryKind::Note, 55, vec![]).is_err());
}

/// A data directory or journal directory every user may write in is refused (anyone could
/// replace the segments); one with the sticky bit (like /tmp) or only group write is used.
#[cfg(unix)]
#[test]
fn a_data_directory_writable_by_every_user_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let set = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let dir = tmp("world-writable");
    std::fs::create_dir_all(dir.join("journal")).unwrap();
    for (target, mode) in [(dir.clone(), 0o777), (dir.join("journal"), 0o757)] {
        set(&target, mode);
        let Err(err) = Journal::open(JournalConfig::new(&dir), |_| {}) else {
            panic!("{} with mode {mode:o} was accepted", target.display());
        };
        let message = err.to_string();
        assert!(message.contains("writable by every user"), "{message}");
        assert!(message.contains(&target.display().to_string()), "{message}");
        set(&target, 0o755);
    }
    let _ = std::fs::remove_dir_all(&dir);
    for mode in [0o1777, 0o770] {
        let dir = tmp(&format!("shared-{mode:o}"));
        std::fs::create_dir_all(&dir).unwrap();
        set(&dir, mode);
        assert!(Journal::open(JournalConfig::new(&dir), |_| {}).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
