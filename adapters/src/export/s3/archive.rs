//! The archive's bucket: the S3 client (object_store's), the object names, and uploads that
//! carry the object lock when retention is configured.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use object_store::aws::{AmazonS3Builder, Checksum};
use object_store::client::{HttpClient, HttpConnector};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, HeaderMap, HeaderValue, ObjectStore, ObjectStoreExt, PutOptions,
    PutPayload, RetryConfig,
};
use warden_supervisor::journal::seal::seal_name;

use crate::config::Retention;

/// One request's bound (a whole segment PUT included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on establishing a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// object_store's own retries of one request (on 5xx and connection errors) before the
/// exporter's backoff takes over: few and short, so an outage is reported promptly.
const CLIENT_RETRIES: usize = 2;
/// Bound on one request and its client retries.
const CLIENT_RETRY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the archive is: a bucket, a key prefix, and the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The bucket.
    pub bucket: String,
    /// The key prefix without leading or trailing `/` (`""`: the bucket's root).
    pub prefix: String,
    /// An S3-compatible server's URL (`None`: AWS).
    pub endpoint: Option<String>,
    /// The region.
    pub region: String,
}

impl Location {
    /// Reads `s3://BUCKET[/PREFIX]`; the error says what is wrong.
    pub fn parse_url(url: &str) -> Result<(String, String), String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{url:?} is not an s3://BUCKET/PREFIX location"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("{url:?} names no bucket (s3://BUCKET/PREFIX)"));
        }
        Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
    }

    /// `s3://BUCKET/PREFIX`, for messages.
    pub fn url(&self) -> String {
        match self.prefix.as_str() {
            "" => format!("s3://{}", self.bucket),
            p => format!("s3://{}/{p}", self.bucket),
        }
    }
}

/// What one listing found under the prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// By first entry: the segment's size, the seal's size (`None`: absent).
    pub segments: BTreeMap<u64, Present>,
    /// Keys under the prefix that are neither a segment nor a seal.
    pub other: Vec<String>,
}

/// The archive objects of one segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Present {
    /// The `.seg` object's size.
    pub seg: Option<u64>,
    /// The `.sig` object's size.
    pub sig: Option<u64>,
}

/// The archive: a store, the prefix, and the object lock put on every upload.
#[derive(Debug)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    url: String,
    lock: Option<Locker>,
}

/// What an upload under object lock needs: a builder for a store whose every request carries
/// the lock headers, with the retain-until date of the moment of the upload.
#[derive(Debug)]
struct Locker {
    builder: AmazonS3Builder,
    location: Location,
    retention: Retention,
}

/// Hands every store built for the archive the same HTTP client, so the per-upload stores of
/// object lock share one connection pool.
#[derive(Debug)]
struct SharedClient(OnceLock<HttpClient>);

impl HttpConnector for SharedClient {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        if let Some(client) = self.0.get() {
            return Ok(client.clone());
        }
        let client = object_store::client::ReqwestConnector::default().connect(options)?;
        Ok(self.0.get_or_init(|| client).clone())
    }
}

impl Archive {
    /// An S3 archive at `location`, credentials from the environment (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, or object_store's other `AWS_*`
    /// variables: web identity, container credentials; the EC2 instance metadata service only
    /// when `AWS_METADATA_ENDPOINT` names it). Every upload carries an SHA-256 checksum the
    /// server verifies and, with `retention`, the object lock. Connects lazily: nothing is
    /// sent yet.
    ///
    /// # Errors
    /// No credentials in the environment, or a location object_store refuses (a bad
    /// endpoint URL).
    pub fn s3(location: &Location, retention: Option<Retention>) -> Result<Archive, String> {
        has_credentials()?;
        // reqwest over rustls without a bundled provider: ring is it (a second install is a
        // harmless no-op).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let builder = builder(location);
        let store = builder
            .clone()
            .with_client_options(client_options(location, HeaderMap::new()))
            .build()
            .map_err(|e| format!("S3 archive {}: {e}", location.url()))?;
        let lock = retention.map(|retention| Locker {
            builder,
            location: location.clone(),
            retention,
        });
        Ok(Self::new(Arc::new(store), location, lock))
    }

    /// An archive over any store (tests use object_store's in-memory store).
    pub fn over(store: Arc<dyn ObjectStore>, location: &Location) -> Archive {
        Self::new(store, location, None)
    }

    fn new(store: Arc<dyn ObjectStore>, location: &Location, lock: Option<Locker>) -> Archive {
        Archive {
            store,
            prefix: Path::from(location.prefix.as_str()),
            url: location.url(),
            lock,
        }
    }

    /// `s3://BUCKET/PREFIX`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The key of `name` under the prefix.
    pub fn key(&self, name: &str) -> Path {
        self.prefix.clone().join(name)
    }

    /// The key of segment `first`'s `.seg` object.
    pub fn segment_key(&self, first: u64) -> Path {
        self.key(&segment_name(first))
    }

    /// The key of segment `first`'s `.sig` object.
    pub fn seal_key(&self, first: u64) -> Path {
        self.key(&seal_name(first))
    }

    /// Every object under the prefix, sorted into segments, seals and the rest.
    ///
    /// # Errors
    /// The listing failed.
    pub async fn list(&self) -> Result<Listing, String> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let mut stream = self.store.list(prefix);
        let mut listing = Listing::default();
        while let Some(meta) = std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await {
            let meta = meta.map_err(|e| format!("listing {}: {e}", self.url))?;
            let name = meta
                .location
                .prefix_match(&self.prefix)
                .map(|mut parts| (parts.next(), parts.next()));
            let parsed = match name {
                Some((Some(part), None)) => parse_name(part.as_ref()),
                _ => None,
            };
            match parsed {
                Some((first, false)) => {
                    listing.segments.entry(first).or_default().seg = Some(meta.size)
                }
                Some((first, true)) => {
                    listing.segments.entry(first).or_default().sig = Some(meta.size)
                }
                None => listing.other.push(meta.location.to_string()),
            }
        }
        Ok(listing)
    }

    /// Uploads `bytes` as `key` (with the object lock when configured), then asks for the
    /// object back (HEAD) and checks its size: only then is the upload confirmed.
    ///
    /// # Errors
    /// The upload or the check failed; the message names the key.
    pub async fn put_confirmed(&self, key: &Path, bytes: Bytes) -> Result<(), String> {
        let len = bytes.len() as u64;
        let payload = PutPayload::from_bytes(bytes);
        let put = match &self.lock {
            None => {
                self.store
                    .put_opts(key, payload, PutOptions::default())
                    .await
            }
            Some(lock) => {
                lock.store()?
                    .put_opts(key, payload, PutOptions::default())
                    .await
            }
        };
        put.map_err(|e| self.upload_error(key, e))?;
        let meta = self
            .store
            .head(key)
            .await
            .map_err(|e| format!("confirming {key}: {e}"))?;
        if meta.size != len {
            return Err(format!(
                "confirming {key}: the archive holds {} bytes where {len} were uploaded",
                meta.size
            ));
        }
        Ok(())
    }

    fn upload_error(&self, key: &Path, e: object_store::Error) -> String {
        let text = e.to_string();
        let lock_refused = text
            .to_ascii_lowercase()
            .replace(' ', "")
            .contains("objectlock");
        if self.lock.is_some() && lock_refused {
            return format!(
                "uploading {key}: the bucket refuses the object lock that export.s3.retention asks for (is Object Lock enabled on it?); nothing is uploaded without it: {text}"
            );
        }
        format!("uploading {key}: {text}")
    }

    /// The object `key`'s size, `None` when it does not exist.
    ///
    /// # Errors
    /// The request failed.
    pub async fn size(&self, key: &Path) -> Result<Option<u64>, String> {
        match self.store.head(key).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(format!("reading {key}: {e}")),
        }
    }

    /// The whole object `key`.
    ///
    /// # Errors
    /// The object is missing or the request failed.
    pub async fn get(&self, key: &Path) -> Result<Bytes, String> {
        let read = async { self.store.get(key).await?.bytes().await };
        read.await.map_err(|e| format!("reading {key}: {e}"))
    }
}

impl Locker {
    /// A store whose every request carries the lock (retain until now + `days`) and names
    /// the checksum algorithm, as S3 requires of a PUT under object lock (the checksum itself,
    /// `x-amz-checksum-sha256`, object_store adds). The store shares the archive's HTTP client.
    fn store(&self) -> Result<Arc<dyn ObjectStore>, String> {
        let until = chrono::Utc::now() + chrono::Duration::days(i64::from(self.retention.days));
        let until = until.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let mut headers = HeaderMap::new();
        let value = |v: &str| HeaderValue::from_str(v).expect("an ASCII header value");
        headers.insert("x-amz-object-lock-mode", value(self.retention.mode.as_s3()));
        headers.insert("x-amz-object-lock-retain-until-date", value(&until));
        headers.insert("x-amz-sdk-checksum-algorithm", value("SHA256"));
        let store = self
            .builder
            .clone()
            .with_client_options(client_options(&self.location, headers))
            .build()
            .map_err(|e| format!("S3 archive: {e}"))?;
        Ok(Arc::new(store))
    }
}

pub use warden_supervisor::journal::format::segment_name;

/// `(first, is_seal)` of an archive object's name (`<first:020>.seg` or `.sig`).
pub fn parse_name(name: &str) -> Option<(u64, bool)> {
    let (first, is_seal) = match (name.strip_suffix(".seg"), name.strip_suffix(".sig")) {
        (Some(n), _) => (n, false),
        (_, Some(n)) => (n, true),
        _ => return None,
    };
    let ok = first.len() == 20 && first.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| first.parse().ok().map(|n| (n, is_seal)))?
}

/// Refuses to build a client that would go looking for credentials on the network (the EC2
/// instance metadata service) unless told where.
fn has_credentials() -> Result<(), String> {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    let any = [
        "AWS_ACCESS_KEY_ID",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_METADATA_ENDPOINT",
    ];
    if any.iter().any(|n| set(n)) {
        return Ok(());
    }
    Err("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary ones), or AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN; to use the EC2 instance metadata service set AWS_METADATA_ENDPOINT=http://169.254.169.254".into())
}

/// The S3 client for `location`: object_store's `AWS_*` variables first, then the location;
/// path-style requests to a custom endpoint (what S3-compatible servers expect), SHA-256
/// checksums on uploads, few and short client retries, one shared HTTP client.
fn builder(location: &Location) -> AmazonS3Builder {
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(&location.bucket)
        .with_region(&location.region)
        .with_checksum_algorithm(Checksum::SHA256)
        .with_retry(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: CLIENT_RETRIES,
            retry_timeout: CLIENT_RETRY_TIMEOUT,
        })
        .with_http_connector(SharedClient(OnceLock::new()));
    if let Some(endpoint) = &location.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_virtual_hosted_style_request(false);
    }
    builder
}

/// Timeouts, plain HTTP only to an `http://` endpoint, and `headers` on every request.
fn client_options(location: &Location, headers: HeaderMap) -> ClientOptions {
    let http = location
        .endpoint
        .as_deref()
        .is_some_and(|e| e.starts_with("http://"));
    ClientOptions::new()
        .with_allow_http(http)
        .with_timeout(REQUEST_TIMEOUT)
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_default_headers(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names_parse_and_nothing_else_does() {
        assert_eq!(parse_name("00000000000000000001.seg"), Some((1, false)));
        assert_eq!(parse_name("00000000000000004712.sig"), Some((4712, true)));
        for bad in [
            "1.seg",
            "00000000000000000001.seg.tmp",
            "x0000000000000000001.sig",
            "LOCK",
            "+0000000000000000001.seg",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn s3_urls_parse_into_bucket_and_prefix() {
        assert_eq!(
            Location::parse_url("s3://b/prod/w-1/"),
            Ok(("b".into(), "prod/w-1".into()))
        );
        assert_eq!(Location::parse_url("s3://b"), Ok(("b".into(), "".into())));
        assert!(Location::parse_url("s3:///p").is_err());
        assert!(Location::parse_url("/tmp/x").is_err());
    }
}
