//! The S3 archive end to end: the real `warden node` archives its sealed segments to a real
//! S3-compatible server (moto's, from PyPI, `python -m moto.server`), `warden audit verify
//! s3://...` checks them and names every bad object, a segment stays on disk until its upload
//! is confirmed, and object lock is put on every upload when retention is configured.
//!
//! Needs a Python with `moto[server]`: `$WARDEN_PYTHON`, else the venv `.ci/run` makes
//! (`$HOME/.cache/warden-venv`). Without one each test says why and skips, unless
//! `WARDEN_REQUIRE_EXTERNAL=1` (CI), where it fails. moto does not check signatures; the
//! node and the CLI sign anyway, with the credentials below.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::moto::{http, python, Moto};
use common::{client, register, wait_for, wait_until, warden_bin};

const OPERATOR: &str = "operator-token-of-16+chars";
/// The credentials the node and the CLI sign with (moto takes any).
const AWS_ENV: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "warden-test"),
    ("AWS_SECRET_ACCESS_KEY", "warden-test-secret"),
];
/// Bound on waiting for the node to archive (seals every second; one upload at a time).
const ARCHIVE_WAIT: Duration = Duration::from_secs(60);

/// A node archiving to `endpoint`, its standard error kept (the tests read its lines).
struct Node {
    child: Child,
    base: String,
    dir: PathBuf,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Node {
    /// A node with 4 KiB segments sealed every second, archiving to `bucket/node-1` on
    /// `endpoint`; `extra` is more of the `export.s3` section, `journal_bytes` the retention
    /// threshold.
    fn start(name: &str, endpoint: &str, bucket: &str, extra: &str, journal_bytes: u64) -> Node {
        let dir = std::env::temp_dir().join(format!("warden-s3-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("node.yaml");
        std::fs::write(
            &config,
            format!(
                "limits: {{segment_bytes: 4096, journal_bytes: {journal_bytes}}}\nexport:\n  seal_interval: 1s\n  s3:\n    bucket: {bucket}\n    prefix: node-1\n    endpoint: {endpoint}\n{extra}"
            ),
        )
        .unwrap();
        let mut child = Command::new(warden_bin())
            .args(["node", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.join("data"))
            .arg("--config")
            .arg(&config)
            .env("WARDEN_OPERATOR_TOKEN", OPERATOR)
            .envs(AWS_ENV)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the warden binary starts");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("{line}");
                lines.lock().unwrap().push(line);
            }
        });
        let base = common::listening_address(&mut child);
        Node {
            child,
            base,
            dir,
            stderr,
        }
    }

    /// Registers `n` agents (an entry each, some hundred bytes: about ten to a segment).
    fn fill(&self, prefix: &str, n: usize) {
        let op = client(&self.base, Some(OPERATOR));
        for i in 0..n {
            register(&op, &format!("{prefix}-{i}"), "swarm");
        }
    }

    /// The node's public key, as `GET /v1/audit/keys` gives it.
    fn public_key(&self) -> String {
        let op = client(&self.base, Some(OPERATOR));
        let (status, body) = common::call(&op, "GET", "/v1/audit/keys", common::Body::None);
        assert_eq!(status, 200, "{body}");
        body["keys"][0]["public_key"].as_str().unwrap().to_string()
    }

    fn journal(&self) -> PathBuf {
        self.dir.join("data/journal")
    }

    /// The segment files on disk, sorted.
    fn local_segments(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.journal())
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| n.ends_with(".seg"))
            .collect();
        names.sort();
        names
    }

    fn logged(&self, needle: &str) -> bool {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `warden audit verify s3://BUCKET/node-1 --endpoint URL [--public-key KEY]...`.
fn verify(moto: &Moto, bucket: &str, keys: &[&str]) -> Output {
    let mut cmd = Command::new(warden_bin());
    cmd.args([
        "audit",
        "verify",
        &format!("s3://{bucket}/node-1"),
        "--endpoint",
        &moto.url,
    ]);
    for key in keys {
        cmd.args(["--public-key", key]);
    }
    cmd.envs(AWS_ENV).output().unwrap()
}

/// Waits until `moto` holds at least `n` seals under `bucket/node-1`; returns the sorted
/// segment numbers (as in the names) that have both objects.
fn archived(moto: &Moto, bucket: &str, n: usize) -> Vec<String> {
    wait_for(ARCHIVE_WAIT, "segments to be archived", || {
        let keys = moto.keys(bucket, "node-1");
        let sealed: Vec<String> = keys
            .iter()
            .filter_map(|k| k.strip_suffix(".sig"))
            .filter(|k| keys.contains(&format!("{k}.seg")))
            .map(str::to_string)
            .collect();
        (sealed.len() >= n).then_some(sealed)
    })
}

/// Waits until every closed segment of `node` is archived with its seal and the open one is
/// empty (nothing more to upload); returns the archived segments as [`archived`] does.
fn settled(node: &Node, moto: &Moto, bucket: &str) -> Vec<String> {
    wait_for(
        ARCHIVE_WAIT,
        "the archive to hold every closed segment",
        || {
            let local = node.local_segments();
            let (open, closed) = local.split_last()?;
            let open_len = std::fs::metadata(node.journal().join(open)).ok()?.len();
            let sealed = archived(moto, bucket, 0);
            let all = closed
                .iter()
                .all(|seg| sealed.contains(&format!("node-1/{}", seg.trim_end_matches(".seg"))));
            // An empty segment is its 52-byte header (supervisor/src/journal/format.rs).
            (all && open_len == 52).then_some(sealed)
        },
    )
}

#[test]
fn sealed_segments_are_archived_and_audit_verify_names_every_bad_object() {
    let Some(python) = python() else { return };
    let moto = Moto::start(&python, common::free_port());
    moto.bucket("audit", false);
    let node = Node::start("verify", &moto.url, "audit", "", 1 << 30);
    node.fill("a", 60);
    let mut segs = settled(&node, &moto, "audit");
    assert!(segs.len() >= 5, "{segs:?}");
    segs.sort();
    let key = node.public_key();
    drop(node);

    let out = verify(&moto, "audit", &[&key]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("s3://audit/node-1: OK: "), "{text}");
    assert!(text.contains(&key), "names the signer: {text}");
    let out = verify(&moto, "audit", &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("self-attested"),
        "{text}"
    );

    // Another key: exit 1, every seal named.
    let other = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    let out = verify(&moto, "audit", &[other]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for seg in &segs {
        assert!(
            text.contains(&format!("  {seg}.sig: signed by key {key}")),
            "{seg}: {text}"
        );
    }

    // One byte of a segment changed, a seal deleted, a segment in the middle deleted.
    let mut bytes = moto.get(&format!("audit/{}.seg", segs[0]));
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    moto.put(&format!("audit/{}.seg", segs[0]), &bytes);
    moto.delete(&format!("audit/{}.sig", segs[1]));
    moto.delete(&format!("audit/{}.seg", segs[2]));
    let out = verify(&moto, "audit", &[&key]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with("s3://audit/node-1: FAILED: 3 bad objects"),
        "{text}"
    );
    assert!(text.contains(&format!("  {}.seg: ", segs[0])), "{text}");
    assert!(
        text.contains(&format!("  {}.seg: its seal (.sig) is missing", segs[1])),
        "{text}"
    );
    assert!(
        text.contains(&format!("  {}.sig: its segment (.seg) is missing", segs[2])),
        "{text}"
    );
}

#[test]
fn a_segment_stays_on_disk_until_its_upload_is_confirmed() {
    let Some(python) = python() else { return };
    // Nothing listens on the endpoint yet: the archive is unreachable.
    let port = common::free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let node = Node::start("outage", &endpoint, "audit", "", 65_536);
    node.fill("b", 400);
    let first = format!("{:020}.seg", 1);
    wait_until(ARCHIVE_WAIT, "retention to wait for the archive", || {
        node.logged("older segments are kept until every export has confirmed them")
    });
    // The exporter says it cannot reach the archive (its thread runs at a lower priority:
    // under the fill's load its first line may come after retention's).
    wait_until(ARCHIVE_WAIT, "the exporter to say it is failing", || {
        node.logged("export s3: failing")
    });
    assert!(
        node.local_segments().contains(&first),
        "the first segment is kept"
    );

    let moto = Moto::start(&python, port);
    moto.bucket("audit", false);
    wait_until(
        ARCHIVE_WAIT,
        "the first segment to be archived and removed",
        || {
            let archived = moto
                .keys("audit", "node-1")
                .contains(&format!("node-1/{first}"));
            archived && !node.local_segments().contains(&first)
        },
    );
    assert!(node.logged("export s3: up"));
    // Every segment removed locally is in the archive with its seal.
    let local = node.local_segments();
    let keys = moto.keys("audit", "node-1");
    let removed: Vec<&String> = keys
        .iter()
        .filter(|k| k.ends_with(".seg"))
        .filter(|k| !local.contains(&k["node-1/".len()..].to_string()))
        .collect();
    assert!(!removed.is_empty());
    for seg in removed {
        assert!(
            keys.contains(&seg.replace(".seg", ".sig")),
            "{seg} has its seal"
        );
    }
}

#[test]
fn with_retention_every_upload_carries_the_object_lock() {
    let Some(python) = python() else { return };
    let moto = Moto::start(&python, common::free_port());
    moto.bucket("locked", true);
    moto.bucket("unlocked", false);
    let retention = "    retention: {mode: compliance, days: 3}\n";
    let node = Node::start("lock", &moto.url, "locked", retention, 1 << 30);
    node.fill("c", 30);
    let segs = archived(&moto, "locked", 2);
    let key = format!("locked/{}.seg", segs[0]);
    let head = http().head(moto.object_url(&key)).call().unwrap();
    let header = |name: &str| {
        head.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{key} has no {name}: {:?}", head.headers()))
    };
    assert_eq!(header("x-amz-object-lock-mode"), "COMPLIANCE");
    let until = header("x-amz-object-lock-retain-until-date");
    assert!(until.starts_with("20"), "{until}");
    let version = header("x-amz-version-id");
    let resp = http()
        .delete(format!("{}?versionId={version}", moto.object_url(&key)))
        .call()
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        403,
        "a locked version cannot be deleted"
    );
    assert_eq!(
        http()
            .head(moto.object_url(&key))
            .call()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    drop(node);

    // A bucket without object lock: the upload fails, saying why, and nothing is uploaded
    // without the lock.
    let node = Node::start("nolock", &moto.url, "unlocked", retention, 1 << 30);
    node.fill("d", 30);
    wait_until(
        ARCHIVE_WAIT,
        "the exporter to say the bucket refuses the lock",
        || node.logged("refuses the object lock"),
    );
    assert!(moto.keys("unlocked", "node-1").is_empty());
}
