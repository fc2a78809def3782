//! The cluster's certificates: one CA per cluster, one certificate per node.
//!
//! Nodes talk to each other over mutual TLS: each side presents its node certificate and
//! accepts the other's only if it chains to the cluster CA. [`init`] makes the CA
//! (`ca.pem`, `ca.key`), [`issue`] a node's certificate and key (`<node>.pem`, `<node>.key`),
//! signed with `ca.key`; [`Identity::load`] reads what a node needs (`ca.pem`, its own pair).
//! Keys are ECDSA P-256 (ring), written as PKCS#8 PEM with mode 0600 in a directory made
//! with mode 0700. Nothing is ever overwritten: an existing file is an error.
//!
//! # Names and verification
//! A node name is one DNS label: 1–63 characters of `[a-z0-9-]`, not starting with `-`
//! ([`NodeName`]). A node certificate carries it as its subject's common name and as a DNS
//! subject alternative name, next to a second, fixed DNS name: [`SERVER_NAME`]
//! (`warden-node.invalid`, a name that can never resolve). Peers are dialed by address, so
//! the dialing side verifies the server's chain to the CA with [`SERVER_NAME`] as the
//! expected name (every node certificate of the cluster has it); the accepting side
//! verifies the client's chain the same way. Both sides then read the peer's node name from
//! its verified certificate ([`node_name_of`]): the one DNS name that is not
//! [`SERVER_NAME`]. Who may join is therefore decided by who holds `ca.key`; what a node is
//! called is decided by its certificate, never by what it says about itself.
//!
//! # Validity and rotation
//! The CA is valid for ten years, node certificates for one
//! ([`CA_CERT_VALIDITY_DAYS`], [`NODE_CERT_VALIDITY_DAYS`]), both from one hour before
//! they are made (clock skew between machines). Nodes read their files at start.
//! - A node certificate: move `<node>.pem` and `<node>.key` aside, `warden certs issue NODE`
//!   again, restart the node. Its peers need nothing.
//! - The CA: `warden certs init --dir NEW`, issue every node again from `NEW`; during the
//!   change each node's `ca.pem` holds both CA certificates (concatenate the files: every
//!   certificate in `ca.pem` is trusted), so old and new certificates are accepted; once all
//!   nodes run on the new ones, `ca.pem` keeps only the new CA.
//! - A compromised node: there is no revocation list; rotate the CA without issuing that
//!   node again.
//!
//! ```no_run
//! use std::path::Path;
//! use warden_sync::certs::{self, NodeName};
//!
//! let dir = Path::new("certs");
//! certs::init(dir).unwrap();
//! certs::issue(dir, &NodeName::new("eu-1").unwrap()).unwrap();
//! let identity = certs::Identity::load(dir, &NodeName::new("eu-1").unwrap()).unwrap();
//! assert_eq!(identity.node_name().unwrap().as_str(), "eu-1");
//! ```

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::RootCertStore;

use crate::limits::{CA_CERT_VALIDITY_DAYS, NODE_CERT_VALIDITY_DAYS, NODE_NAME_BYTES_MAX};

/// The DNS name every node certificate carries besides its node name, and the name a node
/// expects when it dials a peer by address. `.invalid` never resolves (RFC 6761).
pub const SERVER_NAME: &str = "warden-node.invalid";

/// The CA's file names in a certificates directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA's private key file.
pub const CA_KEY_FILE: &str = "ca.key";

/// The common name of a cluster CA, before the CA's own part: `warden cluster CA 1a2b3c4d5e6f`,
/// 12 hex digits of its key identifier (SHA-256 of its public key). So two clusters' CAs have
/// different names, and a certificate from another cluster is refused as `UnknownIssuer`
/// (rather than as a bad signature under a CA of the same name).
const CA_COMMON_NAME: &str = "warden cluster CA";

/// Why certificates could not be made or read. Every variant names the file or the name.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The node name breaks the rules.
    #[error("bad node name `{name}`: {why} (1-63 characters of a-z, 0-9 and '-', not starting with '-')")]
    BadName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A file that would be written exists already.
    #[error("{} exists already; move it aside first (nothing was overwritten)", .0.display())]
    Exists(PathBuf),
    /// A file that is needed does not exist.
    #[error("{} not found: {hint}", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// What makes it.
        hint: &'static str,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM of the expected kind.
    #[error("{}: {why}", path.display())]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// rcgen could not make a key or a certificate.
    #[error("could not make the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A certificate does not verify against the CA (another CA, expired, `ca.key` not
    /// matching `ca.pem`, no node name).
    #[error("{what}: {why}")]
    Untrusted {
        /// Which certificate.
        what: String,
        /// rustls' or webpki's reason.
        why: String,
    },
}

/// A valid node name: one DNS label of `[a-z0-9-]`, 1–63 characters, not starting with '-'.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(String);

impl NodeName {
    /// Checks `name` against the rules.
    ///
    /// Errors: [`CertError::BadName`] saying which rule it breaks.
    pub fn new(name: &str) -> Result<NodeName, CertError> {
        let bad = |why| CertError::BadName {
            name: name.to_owned(),
            why,
        };
        if name.is_empty() {
            return Err(bad("it is empty"));
        }
        if name.len() > NODE_NAME_BYTES_MAX {
            return Err(bad("it is longer than 63 characters"));
        }
        if name.starts_with('-') {
            return Err(bad("it starts with '-'"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(bad("it has a character other than a-z, 0-9 and '-'"));
        }
        Ok(NodeName(name.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The files [`init`] or [`issue`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The certificate (PEM, mode 0644).
    pub cert: PathBuf,
    /// Its private key (PKCS#8 PEM, mode 0600).
    pub key: PathBuf,
}

/// Makes a new cluster CA in `dir` (created with mode 0700 if missing): `ca.pem` and
/// `ca.key` (mode 0600), valid for [`CA_CERT_VALIDITY_DAYS`].
///
/// Errors: [`CertError::Exists`] if either file exists (nothing is written then),
/// [`CertError::Io`] naming the path that failed.
pub fn init(dir: &Path) -> Result<Written, CertError> {
    let files = Written {
        cert: dir.join(CA_CERT_FILE),
        key: dir.join(CA_KEY_FILE),
    };
    refuse_existing(&files)?;
    make_dir(dir)?;
    let key = KeyPair::generate()?;
    let cert = ca_params(&key).self_signed(&key)?;
    write_new(&files.key, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&files.cert, cert.pem().as_bytes(), 0o644)?;
    Ok(files)
}

/// Makes `<node>.pem` and `<node>.key` (mode 0600) in `dir`, signed by the CA there, valid
/// for [`NODE_CERT_VALIDITY_DAYS`]. The new certificate is checked against `ca.pem` the way
/// peers will check it before it is written.
///
/// Errors: [`CertError::Missing`] without a CA (run [`init`]), [`CertError::Exists`] if the
/// node's files exist, [`CertError::Untrusted`] if `ca.key` does not belong to `ca.pem`,
/// [`CertError::BadPem`], [`CertError::Io`].
pub fn issue(dir: &Path, node: &NodeName) -> Result<Written, CertError> {
    let files = Written {
        cert: dir.join(format!("{node}.pem")),
        key: dir.join(format!("{node}.key")),
    };
    let ca_pem = read_needed(&dir.join(CA_CERT_FILE), "run `warden certs init` first")?;
    let ca_key_path = dir.join(CA_KEY_FILE);
    let ca_key_pem = read_needed(&ca_key_path, "run `warden certs init` first")?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| CertError::BadPem {
        path: ca_key_path,
        why: format!("not a private key: {e}"),
    })?;
    refuse_existing(&files)?;
    let key = KeyPair::generate()?;
    let cert = node_params(node)?.signed_by(&key, &Issuer::new(ca_params(&ca_key), ca_key))?;
    let verifier = Verifier::new(&ca_pem, &dir.join(CA_CERT_FILE))?;
    verifier.check(cert.der(), &format!("the new certificate of `{node}`"))?;
    write_new(&files.key, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&files.cert, cert.pem().as_bytes(), 0o644)?;
    Ok(files)
}

/// What a node needs for mutual TLS: the CA certificates it trusts, its certificate and its
/// private key, all PEM text.
#[derive(Clone)]
pub struct Identity {
    /// Every CA certificate the node trusts (usually one; two while the CA rotates).
    pub ca_pem: String,
    /// The node's certificate (only the first certificate of the PEM is used).
    pub cert_pem: String,
    /// The node's private key (PKCS#8, PKCS#1 or SEC1 PEM).
    pub key_pem: String,
}

impl fmt::Debug for Identity {
    /// Never prints the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("key_pem", &"[elided]")
            .finish_non_exhaustive()
    }
}

/// An [`Identity`] parsed: what rustls takes.
pub(crate) struct Parsed {
    /// The trusted CAs.
    pub roots: Arc<RootCertStore>,
    /// The node's certificate.
    pub cert: CertificateDer<'static>,
    /// The node's key.
    pub key: PrivateKeyDer<'static>,
    /// The node's name, from its certificate.
    pub name: NodeName,
}

impl Identity {
    /// Reads `ca.pem`, `<node>.pem` and `<node>.key` from `dir` and checks that the node's
    /// certificate verifies against the CA and names `node`.
    ///
    /// Errors: [`CertError::Missing`] (with the command that makes the file),
    /// [`CertError::Untrusted`], [`CertError::BadPem`], [`CertError::Io`].
    pub fn load(dir: &Path, node: &NodeName) -> Result<Identity, CertError> {
        let hint =
            "run `warden certs issue NODE` (and `warden certs init` before, once per cluster)";
        let identity = Identity {
            ca_pem: read_needed(&dir.join(CA_CERT_FILE), "run `warden certs init` first")?,
            cert_pem: read_needed(&dir.join(format!("{node}.pem")), hint)?,
            key_pem: read_needed(&dir.join(format!("{node}.key")), hint)?,
        };
        let named = identity.node_name()?;
        if &named != node {
            return Err(CertError::Untrusted {
                what: format!("{}", dir.join(format!("{node}.pem")).display()),
                why: format!("the certificate names node `{named}`"),
            });
        }
        Ok(identity)
    }

    /// The node name in the certificate, once the certificate is checked against the CA.
    ///
    /// Errors: as [`Identity::load`].
    pub fn node_name(&self) -> Result<NodeName, CertError> {
        Ok(self.parse()?.name)
    }

    /// Parses and checks the identity: the node certificate must verify against the CA.
    pub(crate) fn parse(&self) -> Result<Parsed, CertError> {
        let at = |what: &str| PathBuf::from(format!("the identity's {what}"));
        let verifier = Verifier::new(&self.ca_pem, &at("CA certificates"))?;
        let cert = CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).map_err(|e| {
            CertError::BadPem {
                path: at("certificate"),
                why: format!("no certificate: {e}"),
            }
        })?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|e| {
            CertError::BadPem {
                path: at("key"),
                why: format!("no private key: {e}"),
            }
        })?;
        verifier.check(&cert, "this node's certificate")?;
        let name = node_name_of(&cert)?;
        Ok(Parsed {
            roots: verifier.roots,
            cert,
            key,
            name,
        })
    }
}

/// The node name in a (verified) peer certificate: its one DNS name other than
/// [`SERVER_NAME`], which must be a valid [`NodeName`].
///
/// Errors: [`CertError::Untrusted`] when the certificate cannot be parsed or names no node
/// (or more than one).
pub fn node_name_of(cert: &CertificateDer<'_>) -> Result<NodeName, CertError> {
    let untrusted = |why: String| CertError::Untrusted {
        what: "a peer certificate".into(),
        why,
    };
    let parsed = webpki::EndEntityCert::try_from(cert).map_err(|e| untrusted(e.to_string()))?;
    let mut names = parsed.valid_dns_names().filter(|n| *n != SERVER_NAME);
    match (names.next(), names.next()) {
        (Some(name), None) => NodeName::new(name).map_err(|e| untrusted(e.to_string())),
        (None, _) => Err(untrusted("it names no node".into())),
        (Some(_), Some(_)) => Err(untrusted("it names more than one node".into())),
    }
}

/// The CA's trusted roots and the check peers make, in one place.
pub(crate) struct Verifier {
    /// Every CA certificate of a `ca.pem`.
    pub roots: Arc<RootCertStore>,
}

impl Verifier {
    /// Parses every certificate of `ca_pem` (read from `path`, named in errors).
    pub fn new(ca_pem: &str, path: &Path) -> Result<Verifier, CertError> {
        let bad = |why: String| CertError::BadPem {
            path: path.to_owned(),
            why,
        };
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| bad(format!("unreadable PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| bad(format!("not a CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(bad("no CA certificate".into()));
        }
        Ok(Verifier {
            roots: Arc::new(roots),
        })
    }

    /// Checks `cert` as a peer does, as server and as client: it must chain to a root, be
    /// valid now, carry [`SERVER_NAME`] and allow both TLS uses.
    pub fn check(&self, cert: &CertificateDer<'_>, what: &str) -> Result<(), CertError> {
        let untrusted = |e: rustls::Error| CertError::Untrusted {
            what: what.into(),
            why: e.to_string(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::client::WebPkiServerVerifier::builder_with_provider(
            self.roots.clone(),
            provider.clone(),
        )
        .build()
        .map_err(|e| CertError::Untrusted {
            what: what.into(),
            why: e.to_string(),
        })?;
        let client = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots.clone(),
            provider,
        )
        .build()
        .map_err(|e| CertError::Untrusted {
            what: what.into(),
            why: e.to_string(),
        })?;
        let name = ServerName::try_from(SERVER_NAME).expect("a valid DNS name");
        let now = UnixTime::now();
        server
            .verify_server_cert(cert, &[], &name, &[], now)
            .map_err(untrusted)?;
        client
            .verify_client_cert(cert, &[], now)
            .map_err(untrusted)?;
        Ok(())
    }
}

/// The parameters of the CA whose key is `key`. [`issue`] rebuilds them to sign: the
/// subject must be byte for byte the one in `ca.pem`, so it depends on the key alone.
fn ca_params(key: &KeyPair) -> CertificateParams {
    let mut params = CertificateParams::default();
    let id: String = params
        .key_identifier(key)
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    params.distinguished_name = distinguished_name(&format!("{CA_COMMON_NAME} {id}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params, CA_CERT_VALIDITY_DAYS);
    params
}

/// A node certificate's parameters: its name as common name and DNS name, [`SERVER_NAME`],
/// both TLS uses.
fn node_params(node: &NodeName) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::new(vec![node.to_string(), SERVER_NAME.to_owned()])?;
    params.distinguished_name = distinguished_name(node.as_str());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, NODE_CERT_VALIDITY_DAYS);
    Ok(params)
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Valid from an hour ago (clocks differ between machines) for `days`.
fn set_validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

fn refuse_existing(files: &Written) -> Result<(), CertError> {
    for path in [&files.cert, &files.key] {
        if path.exists() {
            return Err(CertError::Exists(path.clone()));
        }
    }
    Ok(())
}

/// Creates `dir` (and its parents) with mode 0700 where missing.
fn make_dir(dir: &Path) -> Result<(), CertError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| CertError::Io {
            path: dir.to_owned(),
            source,
        })
}

/// Writes a file that must not exist yet, with `mode`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertError> {
    let io = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => CertError::Exists(path.to_owned()),
            _ => io(e),
        })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io)
}

fn read_needed(path: &Path, hint: &'static str) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => CertError::Missing {
            path: path.to_owned(),
            hint,
        },
        _ => CertError::Io {
            path: path.to_owned(),
            source,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("warden-certs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn name(s: &str) -> NodeName {
        NodeName::new(s).unwrap()
    }

    #[test]
    fn node_names_follow_the_dns_label_rules() {
        for good in ["a", "eu-1", "0", "node-", &"x".repeat(63)] {
            assert!(NodeName::new(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            (&"x".repeat(64) as &str, "longer"),
            ("-a", "starts with"),
            ("EU", "character"),
            ("a.b", "character"),
            ("a b", "character"),
            ("é", "character"),
            ("warden-node.invalid", "character"),
        ] {
            let err = NodeName::new(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn init_and_issue_make_files_a_node_can_load_with_private_modes() {
        let dir = temp_dir("ok").join("nested");
        let ca = init(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&ca.key), 0o600);
        let node = issue(&dir, &name("eu-1")).unwrap();
        assert_eq!(node.cert, dir.join("eu-1.pem"));
        assert_eq!(mode(&node.key), 0o600);
        let identity = Identity::load(&dir, &name("eu-1")).unwrap();
        assert_eq!(identity.node_name().unwrap(), name("eu-1"));
        assert!(!format!("{identity:?}").contains("PRIVATE"));
        let cert = CertificateDer::from_pem_slice(identity.cert_pem.as_bytes()).unwrap();
        let parsed = webpki::EndEntityCert::try_from(&cert).unwrap();
        let names: Vec<&str> = parsed.valid_dns_names().collect();
        assert_eq!(names, ["eu-1", SERVER_NAME]);
    }

    #[test]
    fn nothing_is_overwritten() {
        let dir = temp_dir("exists");
        init(&dir).unwrap();
        let before = std::fs::read(dir.join(CA_KEY_FILE)).unwrap();
        assert!(matches!(init(&dir), Err(CertError::Exists(p)) if p.ends_with("ca.pem")));
        assert_eq!(std::fs::read(dir.join(CA_KEY_FILE)).unwrap(), before);
        issue(&dir, &name("a")).unwrap();
        let err = issue(&dir, &name("a")).unwrap_err();
        assert!(err.to_string().contains("a.pem exists already"), "{err}");
    }

    #[test]
    fn issue_without_a_ca_says_to_run_init() {
        let dir = temp_dir("noca");
        let err = issue(&dir, &name("a")).unwrap_err().to_string();
        assert!(
            err.contains("ca.pem not found: run `warden certs init` first"),
            "{err}"
        );
    }

    #[test]
    fn a_ca_key_that_does_not_match_ca_pem_is_caught_at_issue() {
        let (one, two) = (temp_dir("mix1"), temp_dir("mix2"));
        init(&one).unwrap();
        init(&two).unwrap();
        std::fs::copy(two.join(CA_KEY_FILE), one.join("other.key")).unwrap();
        std::fs::remove_file(one.join(CA_KEY_FILE)).unwrap();
        std::fs::rename(one.join("other.key"), one.join(CA_KEY_FILE)).unwrap();
        let err = issue(&one, &name("a")).unwrap_err();
        assert!(matches!(err, CertError::Untrusted { .. }), "{err}");
        assert!(!one.join("a.pem").exists() && !one.join("a.key").exists());
    }

    #[test]
    fn a_node_certificate_from_another_ca_does_not_load() {
        let (one, two) = (temp_dir("other1"), temp_dir("other2"));
        init(&one).unwrap();
        init(&two).unwrap();
        issue(&two, &name("a")).unwrap();
        for file in ["a.pem", "a.key"] {
            std::fs::copy(two.join(file), one.join(file)).unwrap();
        }
        let err = Identity::load(&one, &name("a")).unwrap_err();
        assert!(matches!(err, CertError::Untrusted { .. }), "{err}");
        // With both CAs trusted (a rotation), it loads.
        let both = std::fs::read_to_string(one.join(CA_CERT_FILE)).unwrap()
            + &std::fs::read_to_string(two.join(CA_CERT_FILE)).unwrap();
        std::fs::write(one.join(CA_CERT_FILE), both).unwrap();
        Identity::load(&one, &name("a")).unwrap();
    }

    #[test]
    fn a_certificate_renamed_to_another_node_does_not_load_as_it() {
        let dir = temp_dir("renamed");
        init(&dir).unwrap();
        issue(&dir, &name("a")).unwrap();
        std::fs::copy(dir.join("a.pem"), dir.join("b.pem")).unwrap();
        std::fs::copy(dir.join("a.key"), dir.join("b.key")).unwrap();
        let err = Identity::load(&dir, &name("b")).unwrap_err().to_string();
        assert!(err.contains("names node `a`"), "{err}");
    }
}
