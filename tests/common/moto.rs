//! moto's S3 server (`python -m moto.server`, from PyPI; `.ci/run` puts it in its venv), for
//! the S3 archive's tests and the export benchmark: started on a port, stopped when dropped,
//! and raw requests to it.

#![allow(dead_code)] // each test crate compiles this module; not all of them use all of it

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_until;

/// What the test's own raw requests to moto carry: moto checks no signature, but it takes an
/// unsigned request for an anonymous one, which may not read the node's objects.
pub const MOTO_AUTH: &str = "AWS4-HMAC-SHA256 Credential=warden-test/20261201/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0";
/// The Python that runs moto's server; otherwise says why and returns None, or fails when
/// `WARDEN_REQUIRE_EXTERNAL=1`.
pub fn python() -> Option<PathBuf> {
    let why = match super::venv_python() {
        None => "neither WARDEN_PYTHON nor HOME is set".to_string(),
        Some(python) => match Command::new(&python)
            .args(["-c", "import moto.server"])
            .output()
        {
            Ok(out) if out.status.success() => return Some(python),
            Ok(out) => format!(
                "{} cannot import moto.server: {}",
                python.display(),
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ),
            Err(e) => format!("{} does not run: {e}", python.display()),
        },
    };
    let why = format!("{why} (pip install 'moto[server]==5.2.5', or set WARDEN_PYTHON)");
    if std::env::var("WARDEN_REQUIRE_EXTERNAL").as_deref() == Ok("1") {
        panic!("WARDEN_REQUIRE_EXTERNAL=1 and {why}");
    }
    eprintln!("skipping the S3 archive test: {why}");
    None
}

/// A raw HTTP client for moto, every request carrying [`MOTO_AUTH`].
pub fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .middleware(
            |mut req: ureq::http::Request<ureq::SendBody>,
             next: ureq::middleware::MiddlewareNext| {
                let auth = ureq::http::HeaderValue::from_static(MOTO_AUTH);
                req.headers_mut().insert("authorization", auth);
                next.handle(req)
            },
        )
        .build()
        .into()
}

/// moto's S3 server on `port`, stopped when dropped (its state is in memory: a restart is an
/// empty server).
pub struct Moto {
    child: Child,
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Moto {
    pub fn start(python: &Path, port: u16) -> Moto {
        let child = Command::new(python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto's server starts");
        let url = format!("http://127.0.0.1:{port}");
        let http = http();
        wait_until(Duration::from_secs(30), "moto to answer", || {
            http.get(&url).call().is_ok()
        });
        Moto { child, url }
    }

    /// Creates `bucket`, with object lock enabled when `locked`.
    pub fn bucket(&self, bucket: &str, locked: bool) {
        let mut put = http().put(format!("{}/{bucket}", self.url));
        if locked {
            put = put.header("x-amz-bucket-object-lock-enabled", "true");
        }
        let status = put.send_empty().unwrap().status().as_u16();
        assert_eq!(status, 200, "creating bucket {bucket}");
    }

    pub fn object_url(&self, key: &str) -> String {
        format!("{}/{key}", self.url)
    }

    /// The keys under `bucket/prefix/`.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let url = format!("{}/{bucket}?list-type=2&prefix={prefix}/", self.url);
        let mut resp = http().get(&url).call().unwrap();
        let body = resp.body_mut().read_to_string().unwrap();
        body.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }

    pub fn get(&self, key: &str) -> Vec<u8> {
        let mut resp = http().get(self.object_url(key)).call().unwrap();
        assert_eq!(resp.status().as_u16(), 200, "GET {key}");
        resp.body_mut().read_to_vec().unwrap()
    }

    pub fn put(&self, key: &str, bytes: &[u8]) {
        let resp = http().put(self.object_url(key)).send(bytes).unwrap();
        assert_eq!(resp.status().as_u16(), 200, "PUT {key}");
    }

    pub fn delete(&self, key: &str) {
        let resp = http().delete(self.object_url(key)).call().unwrap();
        assert_eq!(resp.status().as_u16(), 204, "DELETE {key}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
