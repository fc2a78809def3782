//! Seals and tails on real files: what is signed, what a verifier catches, and a tail that
//! follows a live writer across rotation.

use std::fs;
use std::path::{Path, PathBuf};

use super::format::segment_name;
use super::seal::{check_segment, keys_in, seal_closed, seal_name, PublicKey, Seal, SigningKey};
use super::tail::Tail;
use super::*;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("warden-seal-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    d
}

fn journal(dir: &Path, segment_bytes: u64) -> Journal {
    let mut cfg = JournalConfig::new(dir);
    cfg.segment_bytes = segment_bytes;
    Journal::open(cfg, |_| {}).unwrap().0
}

async fn append(j: &Journal, from: u64, n: u64) {
    for i in from..from + n {
        j.append(
            EntryKind::Decision,
            i,
            format!("{{\"i\":{i}}}").into_bytes(),
        )
        .await
        .unwrap();
    }
}

fn seg(dir: &Path, first: u64) -> PathBuf {
    dir.join("journal").join(segment_name(first))
}

fn sig(dir: &Path, first: u64) -> PathBuf {
    dir.join("journal").join(seal_name(first))
}

fn check(dir: &Path, first: u64, keys: &[PublicKey]) -> Result<(), String> {
    let seal = Seal::from_json(&fs::read(sig(dir, first)).unwrap())?;
    check_segment(
        &fs::read(seg(dir, first)).unwrap(),
        first,
        "seg",
        Some(&seal),
        keys,
    )
    .map(|_| ())
}

#[tokio::test]
async fn every_closed_segment_is_sealed_and_the_open_one_is_not() {
    let dir = tmp("closed");
    let j = journal(&dir, 2_048);
    append(&j, 0, 200).await;
    let key = SigningKey::generate();
    let pass = seal_closed(&dir, &key).unwrap();
    let segments = FileStorage::new(&dir).segments().unwrap();
    assert!(segments.len() > 3, "rotated: {segments:?}");
    assert_eq!(pass.sealed, segments[..segments.len() - 1].to_vec());
    assert!(
        !sig(&dir, *segments.last().unwrap()).exists(),
        "the open segment is not sealed"
    );
    for first in &pass.sealed {
        check(&dir, *first, &[key.public_key()]).unwrap();
    }
    // A second pass has nothing to do; a forced close seals the rest.
    assert!(seal_closed(&dir, &key).unwrap().sealed.is_empty());
    j.close_segment();
    append(&j, 200, 1).await;
    let pass = seal_closed(&dir, &key).unwrap();
    assert_eq!(pass.sealed, vec![*segments.last().unwrap()]);
    let seal = Seal::from_json(&fs::read(sig(&dir, pass.sealed[0])).unwrap()).unwrap();
    assert_eq!(
        seal.last_seq, 200,
        "the closed segment ends at the last entry before the close"
    );
    assert_eq!(keys_in(&dir), vec![key.public_key()]);
    j.shutdown().await;
    fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn closing_an_empty_segment_does_nothing() {
    let dir = tmp("empty");
    let j = journal(&dir, 1 << 20);
    append(&j, 0, 3).await;
    j.close_segment();
    j.close_segment();
    append(&j, 3, 1).await;
    j.close_segment();
    append(&j, 4, 1).await;
    assert_eq!(FileStorage::new(&dir).segments().unwrap(), vec![1, 4, 5]);
    let key = SigningKey::generate();
    assert_eq!(seal_closed(&dir, &key).unwrap().sealed, vec![1, 4]);
    j.close_segment();
    j.close_segment();
    append(&j, 5, 1).await;
    assert_eq!(FileStorage::new(&dir).segments().unwrap(), vec![1, 4, 5, 6]);
    assert_eq!(seal_closed(&dir, &key).unwrap().sealed, vec![5]);
    j.shutdown().await;
    fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_verifier_names_a_changed_byte_a_foreign_key_and_a_forged_seal() {
    let dir = tmp("tamper");
    let j = journal(&dir, 2_048);
    append(&j, 0, 100).await;
    j.shutdown().await;
    let key = SigningKey::generate();
    let sealed = seal_closed(&dir, &key).unwrap().sealed;
    let first = sealed[1];
    let mine = [key.public_key()];
    check(&dir, first, &mine).unwrap();
    // Another key: the seal is sound but not signed by a trusted key.
    let other = SigningKey::generate();
    let e = check(&dir, first, &[other.public_key()]).unwrap_err();
    assert!(e.contains("not one of the given public keys"), "{e}");
    // One payload byte changed: the frame's checksum catches it (a chain or CRC error).
    let mut bytes = fs::read(seg(&dir, first)).unwrap();
    let at = bytes.len() - 3;
    bytes[at] ^= 1;
    fs::write(seg(&dir, first), &bytes).unwrap();
    assert!(check(&dir, first, &mine).is_err());
    bytes[at] ^= 1;
    fs::write(seg(&dir, first), &bytes).unwrap();
    // A seal re-signed by someone else over the same summary, claiming the node's key.
    let mut seal = Seal::from_json(&fs::read(sig(&dir, first)).unwrap()).unwrap();
    let forged = other.seal(&check_segment(&bytes, first, "s", None, &[]).unwrap());
    seal.signature = forged.signature;
    fs::write(sig(&dir, first), seal.to_json()).unwrap();
    let e = check(&dir, first, &mine).unwrap_err();
    assert!(e.contains("signature does not match"), "{e}");
    // A seal moved to another segment: the range disagrees.
    fs::copy(sig(&dir, sealed[0]), sig(&dir, first)).unwrap();
    let e = check(&dir, first, &mine).unwrap_err();
    assert!(e.contains("the seal is for entries"), "{e}");
    // Garbage is not a seal.
    assert!(Seal::from_json(b"{\"format\":1}").is_err());
    assert!(Seal::from_json(&vec![b' '; 10_000]).is_err());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn keys_read_back_as_written_and_bad_keys_are_refused() {
    let key = SigningKey::generate();
    let again = SigningKey::from_seed_hex(&key.seed_hex()).unwrap();
    assert_eq!(again.public_key(), key.public_key());
    let text = key.public_key().to_string();
    assert_eq!(text.len(), 64);
    assert_eq!(text.parse::<PublicKey>().unwrap(), key.public_key());
    assert_eq!(
        format!("ed25519:{text}").parse::<PublicKey>().unwrap(),
        key.public_key()
    );
    assert!("abc".parse::<PublicKey>().is_err());
    assert!(SigningKey::from_seed_hex("00").is_err());
    assert!(
        !format!("{key:?}").contains(&key.seed_hex()),
        "Debug never shows the secret"
    );
}

#[tokio::test]
async fn a_tail_follows_a_live_writer_across_segments_from_any_entry() {
    let dir = tmp("tail");
    let j = journal(&dir, 4_096);
    append(&j, 0, 50).await;
    let mut all = Vec::new();
    read_all(&dir, |e| all.push(e.clone())).unwrap();
    // From the start, in small batches, up to the acknowledged head only.
    let mut tail = Tail::new(&dir, 1);
    let mut got = Vec::new();
    loop {
        let batch = tail.next_batch(j.head().0, 7).unwrap();
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 7);
        got.extend(batch);
    }
    assert_eq!(got, all);
    // New entries, a rotation among them, arrive on the next call.
    append(&j, 50, 100).await;
    let more = tail.next_batch(j.head().0, usize::MAX).unwrap();
    assert_eq!(more.len(), 100);
    assert_eq!(more[0].seq, 51);
    assert_eq!(more[0].prev_hash, got.last().unwrap().hash);
    assert!(tail.next_batch(j.head().0, 10).unwrap().is_empty());
    // From the middle of a later segment.
    let mut mid = Tail::new(&dir, 120);
    let rest = mid.next_batch(150, usize::MAX).unwrap();
    assert_eq!(
        rest.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (120..=150).collect::<Vec<_>>()
    );
    // Retention removed the first segment: a tail from there says so.
    j.remove_segments_before(120).unwrap();
    let e = Tail::new(&dir, 1).next_batch(150, 10).unwrap_err();
    assert!(matches!(e, JournalError::Removed { seq: 1, .. }), "{e}");
    j.shutdown().await;
    fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_tail_reports_a_changed_entry() {
    let dir = tmp("tailbad");
    let j = journal(&dir, 1 << 20);
    append(&j, 0, 10).await;
    j.shutdown().await;
    let mut bytes = fs::read(seg(&dir, 1)).unwrap();
    let at = bytes.len() - 2;
    bytes[at] ^= 0x20;
    fs::write(seg(&dir, 1), &bytes).unwrap();
    // The last frame fails its checksum: a tail asked for it cannot find it whole.
    let e = Tail::new(&dir, 1).next_batch(10, 100).unwrap_err();
    assert!(matches!(e, JournalError::Corrupt { .. }), "{e}");
    fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_segment_that_does_not_continue_its_sealed_predecessor_is_never_sealed() {
    let dir = tmp("continue");
    let j = journal(&dir, 2_048);
    append(&j, 0, 100).await;
    j.shutdown().await;
    let key = SigningKey::generate();
    let sealed = seal_closed(&dir, &key).unwrap().sealed;
    // Someone rewrites the second closed segment under another history (the first entry of a
    // fresh journal carries the genesis link) and deletes its seal: the sealer refuses it.
    let second = sealed[1];
    let other = tmp("continue-other");
    let k = journal(&other, 1 << 20);
    append(&k, 0, 3).await;
    k.shutdown().await;
    let mut forged = fs::read(seg(&other, 1)).unwrap();
    forged[8..16].copy_from_slice(&second.to_le_bytes()); // its header's first_seq
    let crc = crc32fast::hash(&forged[..48]);
    forged[48..52].copy_from_slice(&crc.to_le_bytes());
    fs::write(seg(&dir, second), &forged).unwrap();
    fs::remove_file(sig(&dir, second)).unwrap();
    let pass = seal_closed(&dir, &key).unwrap();
    assert!(pass.sealed.is_empty(), "{pass:?}");
    assert_eq!(pass.refused.len(), 1, "{pass:?}");
    assert_eq!(pass.refused[0].0, second);
    fs::remove_dir_all(&dir).unwrap();
    fs::remove_dir_all(&other).unwrap();
}

#[tokio::test]
async fn a_sealed_segment_left_last_by_a_removed_tail_is_still_checked() {
    use super::format::SEGMENT_HEADER_BYTES;
    use super::seal::check_seals;
    let dir = tmp("last-sealed");
    let j = journal(&dir, 2_048);
    append(&j, 0, 100).await;
    j.shutdown().await;
    let key = SigningKey::generate();
    let sealed = seal_closed(&dir, &key).unwrap().sealed;
    let segments = FileStorage::new(&dir).segments().unwrap();
    let (open, last_sealed) = (segments[segments.len() - 1], *sealed.last().unwrap());
    // Someone removes the open segment, so the last sealed one is now last, and cuts every
    // entry out of it: the chain still verifies (a journal may end anywhere), its seal remains.
    fs::remove_file(seg(&dir, open)).unwrap();
    let bytes = fs::read(seg(&dir, last_sealed)).unwrap();
    fs::write(seg(&dir, last_sealed), &bytes[..SEGMENT_HEADER_BYTES]).unwrap();
    verify(&dir).unwrap();
    let report = check_seals(&dir, &[key.public_key()]).unwrap();
    assert!(
        report.bad.iter().any(|(first, _)| *first == last_sealed),
        "a sealed segment no longer matching its seal must be named: {report:?}"
    );
    // Both gone, the seal left behind: the seal names entries the journal no longer holds.
    fs::remove_file(seg(&dir, last_sealed)).unwrap();
    let report = check_seals(&dir, &[key.public_key()]).unwrap();
    assert!(
        report
            .bad
            .iter()
            .any(|(first, why)| *first == last_sealed && why.contains("missing")),
        "{report:?}"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_journal_whose_last_segment_is_sealed_appends_to_a_new_one() {
    let dir = tmp("sealed-last");
    let j = journal(&dir, 2_048);
    append(&j, 0, 60).await;
    j.shutdown().await;
    let key = SigningKey::generate();
    let sealed = seal_closed(&dir, &key).unwrap().sealed;
    // The open segment is lost; the last sealed one is now the last file.
    let segments = FileStorage::new(&dir).segments().unwrap();
    let open = *segments.last().unwrap();
    fs::remove_file(seg(&dir, open)).unwrap();
    let last_sealed = *sealed.last().unwrap();
    let before = fs::read(seg(&dir, last_sealed)).unwrap();
    let j = journal(&dir, 2_048);
    append(&j, 100, 3).await;
    j.shutdown().await;
    assert_eq!(
        fs::read(seg(&dir, last_sealed)).unwrap(),
        before,
        "a sealed segment is never appended to"
    );
    check(&dir, last_sealed, &[key.public_key()]).unwrap();
    fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_tail_reads_entries_larger_than_its_first_read() {
    let dir = tmp("tailbig");
    let j = journal(&dir, 8 << 20);
    // Entries of 300 KiB: each is larger than the tail's first read.
    for i in 0..5u64 {
        let payload = format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(300 << 10));
        j.append(EntryKind::Decision, i, payload.into_bytes())
            .await
            .unwrap();
    }
    let mut tail = Tail::new(&dir, 1);
    let got = tail.next_batch(j.head().0, 100).unwrap();
    assert_eq!(
        got.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    j.shutdown().await;
    fs::remove_dir_all(&dir).unwrap();
}
