//! The exporter and the verifier over object_store's in-memory store, on segments written and
//! sealed by the real journal. (tests/export_s3.rs runs them against a real S3 server.)

use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use warden_supervisor::journal::seal::{seal_closed, SigningKey};
use warden_supervisor::journal::{EntryKind, Journal, JournalConfig};

use super::*;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("warden-s3-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A journal in `dir` with `entries` entries in small segments, every closed one sealed by
/// `key`; returns the live journal (its last segment open).
async fn sealed_journal(dir: &Path, entries: u64, key: &SigningKey) -> Journal {
    let mut config = JournalConfig::new(dir);
    config.segment_bytes = 1_024;
    let (journal, _) = Journal::open(config, |_| {}).unwrap();
    for i in 0..entries {
        let payload = format!("{{\"note\":\"entry {i} {}\"}}", "x".repeat(100));
        journal
            .append(EntryKind::Note, 1_000 + i, payload.into_bytes())
            .await
            .unwrap();
    }
    seal_closed(dir, key).unwrap();
    journal
}

fn location(prefix: &str) -> Location {
    Location {
        bucket: "b".into(),
        prefix: prefix.into(),
        endpoint: None,
        region: "us-east-1".into(),
    }
}

fn exporter(dir: &Path, store: &Arc<InMemory>, prefix: &str) -> (Exporter, watch::Receiver<u64>) {
    let (tx, rx) = watch::channel(0);
    let mut e = Exporter::new(dir.to_path_buf(), None, tx);
    let store: Arc<dyn ObjectStore> = store.clone();
    e.archive = Some(Archive::over(store, &location(prefix)));
    (e, rx)
}

/// The closed segments' (first, last) on disk.
fn closed(dir: &Path) -> Vec<(u64, u64)> {
    let storage = FileStorage::new(dir);
    let firsts = storage.segments().unwrap();
    firsts[..firsts.len() - 1]
        .iter()
        .map(|&f| {
            let seal = std::fs::read(storage.location().join(seal_name(f))).unwrap();
            (f, Seal::from_json(&seal).unwrap().last_seq)
        })
        .collect()
}

/// A sealed closed segment (`sealed`), else one the sealer has not got to: unknown last
/// entry, unless it is empty (`last == first - 1`).
fn local(first: u64, last: u64, sealed: bool) -> Local {
    Local {
        first,
        last: (sealed || last + 1 == first).then_some(last),
        seal: sealed.then(|| Bytes::from_static(b"{}")),
    }
}

#[test]
fn the_mark_covers_only_a_contiguous_run_of_confirmed_segments() {
    let segs = [
        local(11, 20, true),
        local(21, 30, true),
        local(31, 40, true),
    ];
    // Nothing confirmed: the mark stays before the oldest segment on disk.
    assert_eq!(contiguous_mark(&segs, |_| false), Some(10));
    // A later segment confirmed before an earlier one does not move it past the gap.
    assert_eq!(contiguous_mark(&segs, |f| f == 21 || f == 31), Some(10));
    assert_eq!(contiguous_mark(&segs, |f| f == 11 || f == 31), Some(20));
    assert_eq!(contiguous_mark(&segs, |_| true), Some(40));
    // An unsealed segment holds it; an empty one (nothing to archive) does not.
    let segs = [
        local(11, 20, true),
        local(21, 0, false),
        local(31, 40, true),
    ];
    assert_eq!(contiguous_mark(&segs, |_| true), Some(20));
    let segs = [
        local(11, 20, true),
        local(21, 20, false),
        local(21, 30, true),
    ];
    assert_eq!(contiguous_mark(&segs, |_| true), Some(30));
    assert_eq!(contiguous_mark(&[], |_| true), None);
}

#[tokio::test]
async fn sealed_segments_are_archived_with_their_seals_and_the_mark_follows() {
    let dir = scratch("archive");
    let key = SigningKey::generate();
    let journal = sealed_journal(&dir, 40, &key).await;
    let store = Arc::new(InMemory::new());
    let (mut e, mark) = exporter(&dir, &store, "prod/w1");
    e.pass().await.unwrap();
    let segs = closed(&dir);
    assert!(segs.len() >= 3, "small segments: {segs:?}");
    let jdir = FileStorage::new(&dir).location();
    for &(first, _) in &segs {
        for name in [segment_name(first), seal_name(first)] {
            let key = Key::from(format!("prod/w1/{name}").as_str());
            let got = store.get(&key).await.unwrap().bytes().await.unwrap();
            assert_eq!(got, std::fs::read(jdir.join(&name)).unwrap(), "{name}");
        }
    }
    assert_eq!(
        *mark.borrow(),
        segs.last().unwrap().1,
        "every closed segment is confirmed"
    );
    let open = FileStorage::new(&dir).segments().unwrap().pop().unwrap();
    let open_key = Key::from(format!("prod/w1/{}", segment_name(open)).as_str());
    assert!(
        store.head(&open_key).await.is_err(),
        "the open segment is never uploaded"
    );

    // A restart learns what the archive holds and uploads nothing again.
    let tags = |store: Arc<InMemory>| async move {
        let listing = Archive::over(store.clone(), &location("prod/w1"))
            .list()
            .await
            .unwrap();
        let mut tags = Vec::new();
        for &first in listing.segments.keys() {
            let k = Key::from(format!("prod/w1/{}", segment_name(first)).as_str());
            tags.push(store.head(&k).await.unwrap().e_tag);
        }
        tags
    };
    let before = tags(store.clone()).await;
    let (mut again, mark) = exporter(&dir, &store, "prod/w1");
    again.pass().await.unwrap();
    assert_eq!(
        tags(store.clone()).await,
        before,
        "nothing was uploaded again"
    );
    assert_eq!(*mark.borrow(), segs.last().unwrap().1);

    // An archived seal that differs from the local one is not taken as confirmed.
    let (first, _) = segs[1];
    let sig = Key::from(format!("prod/w1/{}", seal_name(first)).as_str());
    let mut other = std::fs::read(jdir.join(seal_name(first))).unwrap();
    other[10] ^= 1;
    store.put(&sig, PutPayload::from(other)).await.unwrap();
    let (mut third, mark) = exporter(&dir, &store, "prod/w1");
    let local = third.scan().unwrap();
    let listing = third.archive.as_ref().unwrap().list().await.unwrap();
    third.learn(&local, &listing).await.unwrap();
    third.publish(&local);
    assert_eq!(
        *mark.borrow(),
        segs[0].1,
        "the mark stops before the segment to upload again"
    );
    journal.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn the_verifier_names_every_bad_object() {
    let dir = scratch("verify");
    let key = SigningKey::generate();
    let journal = sealed_journal(&dir, 60, &key).await;
    let store = Arc::new(InMemory::new());
    let (mut e, _) = exporter(&dir, &store, "p");
    e.pass().await.unwrap();
    let archive = Archive::over(store.clone(), &location("p"));
    let segs = closed(&dir);
    assert!(segs.len() >= 5, "{segs:?}");
    let trusted = [key.public_key()];

    let report = verify_store(&archive, &trusted).await.unwrap();
    assert!(report.intact(), "{:?}", report.problems);
    assert_eq!(report.segments, segs.len());
    assert_eq!(report.range, Some((1, segs.last().unwrap().1)));
    assert_eq!(report.signers, trusted);
    assert!(!report.self_attested);
    let unchecked = verify_store(&archive, &[]).await.unwrap();
    assert!(unchecked.intact() && unchecked.self_attested);

    // Another key: every seal is named.
    let other = [SigningKey::generate().public_key()];
    let report = verify_store(&archive, &other).await.unwrap();
    let named: Vec<&str> = report.problems.iter().map(|p| p.key.as_str()).collect();
    let sigs: Vec<String> = segs
        .iter()
        .map(|s| format!("p/{}", seal_name(s.0)))
        .collect();
    assert_eq!(named, sigs);
    assert!(report.problems[0]
        .reason
        .contains("not one of the given public keys"));

    // One byte of a segment changed; a seal deleted; a segment deleted; a segment and its
    // seal deleted (a gap).
    let seg_key = |i: usize| Key::from(format!("p/{}", segment_name(segs[i].0)).as_str());
    let sig_key = |i: usize| Key::from(format!("p/{}", seal_name(segs[i].0)).as_str());
    let mut bytes = store
        .get(&seg_key(0))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let at = bytes.len() - 3;
    bytes[at] ^= 0x20;
    store
        .put(&seg_key(0), PutPayload::from(bytes))
        .await
        .unwrap();
    store.delete(&sig_key(1)).await.unwrap();
    store.delete(&seg_key(2)).await.unwrap();
    store.delete(&seg_key(4)).await.unwrap();
    store.delete(&sig_key(4)).await.unwrap();
    let report = verify_store(&archive, &trusted).await.unwrap();
    let named: Vec<(String, &str)> = report
        .problems
        .iter()
        .map(|p| (p.key.clone(), p.reason.as_str()))
        .collect();
    let want = [
        seg_key(0).to_string(),
        seg_key(1).to_string(),
        sig_key(2).to_string(),
        seg_key(5).to_string(),
    ];
    assert_eq!(
        named.iter().map(|n| n.0.clone()).collect::<Vec<_>>(),
        want,
        "{named:#?}"
    );
    assert!(
        named[1].1.contains("seal (.sig) is missing"),
        "{}",
        named[1].1
    );
    assert!(
        named[2].1.contains("segment (.seg) is missing"),
        "{}",
        named[2].1
    );
    let gap = format!(
        "entries {}..={} are not in the archive",
        segs[4].0, segs[4].1
    );
    assert!(named[3].1.contains(&gap), "{}", named[3].1);
    journal.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn an_archive_whose_first_segments_were_removed_is_named() {
    let dir = scratch("verify-head");
    let key = SigningKey::generate();
    let journal = sealed_journal(&dir, 60, &key).await;
    let store = Arc::new(InMemory::new());
    let (mut e, _) = exporter(&dir, &store, "p");
    e.pass().await.unwrap();
    let archive = Archive::over(store.clone(), &location("p"));
    let segs = closed(&dir);
    let trusted = [key.public_key()];
    // The oldest segments and their seals removed: what is left is whole and continuous,
    // but an archive starts at entry 1, or (retention before the archive) at a snapshot.
    for s in &segs[..2] {
        for name in [segment_name(s.0), seal_name(s.0)] {
            store
                .delete(&Key::from(format!("p/{name}").as_str()))
                .await
                .unwrap();
        }
    }
    let report = verify_store(&archive, &trusted).await.unwrap();
    assert!(
        !report.intact(),
        "the archive's first entries are gone: {report:?}"
    );
    let p = &report.problems[0];
    assert_eq!(p.key, format!("p/{}", segment_name(segs[2].0)));
    assert!(p.reason.contains("not a snapshot"), "{}", p.reason);
    journal.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
