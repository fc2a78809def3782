//! The `secrets` detector: credentials that must not leave the agent.
//!
//! Kinds, most specific first: `private_key` (PEM/OpenSSH/PGP private key header, in any
//! case and with any Unicode spaces; its words without the dashes, in capitals; or a key's
//! body alone, by the base64 of its DER or OpenSSH encoding's first bytes),
//! `aws_access_key` (`AKIA`/`ASIA` + 16), `aws_secret_key` (a 40-char value assigned to
//! `secret_access_key`), `github_token` (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`,
//! `github_pat_`), `anthropic_key` (`sk-ant-…`), `openai_key` (`sk-…`, `sk-proj-…`),
//! `url_credentials` (`scheme://user:password@host`), `basic_auth` (`Authorization: Basic`),
//! `credential` (a secret-looking value assigned to `password`, `secret`, `api_key`, `token`
//! and similar names, or glued to `mysql -p`), and `high_entropy` (an unlabelled
//! random-looking token).
//!
//! High-entropy tokens are runs of at least 32 characters from `[A-Za-z0-9+/_-]` (plus `=`
//! padding) that mix upper case, lower case and digits and have a Shannon entropy of at least
//! [`base64_min_entropy`] bits per character (4.2 to 4.4 depending on length). Deliberately not
//! flagged: runs that decode (as base64) to printable text, `data:…;base64,` payloads, SRI/CSP
//! hashes (`sha512-…`), SSH public keys, bodies of PEM public keys and certificates, IPFS CIDs,
//! absolute paths, identifiers inside URLs (unless a query key names a credential, e.g.
//! `?sig=`, or the URL is a webhook), and runs longer than [`MAX_TOKEN_LEN`] (encoded blobs
//! rather than credentials). Hex strings (git SHAs, digests, trace ids, UUIDs) are flagged only
//! when a credential word (`key`, `secret`, `token`, `password`, …) precedes them on the same
//! line, and then need an entropy of at least [`HEX_MIN_ENTROPY`].

use std::sync::LazyLock;

use regex::Regex;

use super::util::{
    base64_decode, byte_at, byte_before, contains_ignore_ascii_case, distinct_bytes, earliest,
    shannon_entropy,
};

type Found = Option<(&'static str, usize, usize)>;

/// Minimum Shannon entropy (bits/char) for an unlabelled base64-like token of `len` chars:
/// `log2(len) - 0.8`, clamped to 4.0..=4.4, i.e. 4.2 at 32 chars and 4.4 from 38 chars on.
///
/// A flat 4.0 lets camelCase identifiers with a digit through
/// (`getUserProfileByAccountIdentifier2` scores 4.09); uniformly random base64 scores 4.22 at
/// the 1st percentile for 32 chars and 4.48 for 40 chars, and grows with length while
/// identifier-like text stays near 4.1-4.3.
pub(super) fn base64_min_entropy(len: usize) -> f64 {
    ((len as f64).log2() - 0.8).clamp(4.0, 4.4)
}
/// Minimum Shannon entropy (bits/char) for a labelled hex token (max possible is 4.0).
pub(super) const HEX_MIN_ENTROPY: f64 = 3.0;
/// Minimum length of a high-entropy token.
pub(super) const MIN_TOKEN_LEN: usize = 32;
/// Longer runs are encoded payloads (images, archives), not credentials.
pub(super) const MAX_TOKEN_LEN: usize = 512;

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("built-in secrets pattern compiles")
}

/// Any case, any Unicode space between the words (`-----begin rsa\u{a0}private key-----`).
static PRIVATE_KEY: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)-----\s*BEGIN[A-Z0-9\s]{0,40}\sPRIVATE\s+KEY(?:\s+BLOCK)?\s*-----"));

/// A private key without its PEM dashes: the header's words in capitals (`BEGIN RSA PRIVATE
/// KEY`) followed by a body (a mention of the header, as in a `grep` for it, is not one), or
/// the body alone, recognized by how its DER encoding starts in base64: PKCS#1 RSA
/// (`MII…IBAAK`), PKCS#8 RSA (`…IBADANBgkqhkiG9w0BAQEFAASC`, `AASC`: an octet string, where a
/// public key has a bit string), PKCS#8 EC (`AgEAMB.GByqGSM49AgEG`), SEC1 EC P-256/384/521
/// (`MHcCAQEEI`, `MIGkAgEBBD`, `MIHcAgEBBEI`), PKCS#8 Ed25519 (`MC4CAQAwBQYDK2VwBCIEI`) and
/// OpenSSH (`openssh-key-v1` in base64); the same DER starts in hex (`3082…020100028…`), and
/// `openssl rsa -text` output (`Private-Key: (2048 bit`, `privateExponent:`). Public keys and
/// certificates start otherwise.
static PRIVATE_KEY_BARE: LazyLock<Regex> = LazyLock::new(|| {
    re(concat!(
        r"BEGIN(?:\s+[A-Z0-9]+){0,3}\s+PRIVATE\s+KEY[\s-]*(?:Proc-Type|[A-Za-z0-9+/]{16})",
        r"|MII[A-Za-z0-9+/]{3}IBAAK[BC]",
        r"|MII[A-Za-z0-9+/]{3}IBADANBgkqhkiG9w0BAQEFAASC",
        r"|AgEAMB[AM]GByqGSM49AgEG",
        r"|MHcCAQEEI|MIGkAgEBBD|MIHcAgEBBEI",
        r"|MC4CAQAwBQYDK2VwBCIEI",
        r"|b3BlbnNzaC1rZXktdjE",
        r"|Private-Key:\s*\(\d+\s+bit|privateExponent:",
        r"|(?i:3082[0-9a-f]{4}02010002820|3082[0-9a-f]{4}020100300d06092a864886f70d0101010500048)",
    ))
});
static AWS_KEY_ID: LazyLock<Regex> = LazyLock::new(|| re(r"(?:AKIA|ASIA)[A-Z0-9]{16}"));
static AWS_KEY_ID_ANY_CASE: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)(?:akia|asia)[a-z0-9]{16}"));
static AWS_SECRET: LazyLock<Regex> =
    LazyLock::new(|| re(r#"(?i)secret_?access_?key["']?\s*[:=]\s*["']?([A-Za-z0-9/+]{40})"#));
static GITHUB: LazyLock<Regex> =
    LazyLock::new(|| re(r"gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,}"));
/// `sk-` keys (`sk-ant-` is Anthropic's).
static SK_KEY: LazyLock<Regex> = LazyLock::new(|| re(r"sk-[A-Za-z0-9_\-]{20,}"));
static URL_CREDENTIALS: LazyLock<Regex> = LazyLock::new(|| {
    re(r#"[A-Za-z][A-Za-z0-9+.\-]{0,20}://[^\s:/@'"]*:([^\s:/@'"]{3,})@[A-Za-z0-9.\-\[\]]"#)
});
static BASIC_AUTH: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)authorization:\s*basic\s+([A-Za-z0-9+/]{8,}={0,2})"));
/// `name = value`, `name: value`, `"name": "value"`; the value is what follows the first
/// `:`/`=`, whitespace and an optional quote.
static CREDENTIAL: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r#"(?i)(?:password|passwd|pwd|secret|secret[_-]?key|api[_-]?key|apikey|access[_-]?token|auth[_-]?token|refresh[_-]?token|bearer[_-]?token|client[_-]?secret|private[_-]?key|token)["']?\s*[:=]\s*["']?[^\s"'`,;&]{8,}"#,
    )
});
/// `mysql -pSECRET` (password glued to `-p`) in the MySQL/MariaDB client tools.
static MYSQL_PASSWORD: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?:mysql|mysqldump|mysqladmin|mariadb|mariadb-dump)(?:[ \t]+[^\s]+)*?[ \t]+-p([^\s\-][^\s]{3,})",
    )
});
static TOKEN_RUN: LazyLock<Regex> = LazyLock::new(|| re(r"[A-Za-z0-9+/_\-]{32,}={0,2}"));
/// Header of any PEM block; group 1 is its label.
static PEM_HEADER: LazyLock<Regex> = LazyLock::new(|| re(r"-----BEGIN ([A-Z0-9 ]{1,40})-----"));

/// Each named-credential rule runs its own pattern. (A union of them as one gate regex was
/// tried: its automaton outgrew the lazy DFA's cache on long texts of random runs and fell
/// back to the slow NFA, 0.7 s for 1 MB, against milliseconds for all the patterns apart.)
pub(super) fn find(text: &str) -> Found {
    let mut best = find_labelled(text);
    earliest(&mut best, find_high_entropy(text));
    best
}

/// [`find`] without the `high_entropy` rule: only credentials a vendor prefix, a shape or a
/// label names, which a random id never matches.
pub(super) fn find_labelled(text: &str) -> Found {
    let mut best = None;
    earliest(&mut best, find_private_key(text));
    earliest(&mut best, find_aws_key_id(text));
    earliest(&mut best, find_aws_key_id_any_case(text));
    earliest(&mut best, find_aws_secret(text));
    earliest(&mut best, find_github(text));
    earliest(&mut best, find_sk_key(text));
    earliest(&mut best, find_url_credentials(text));
    earliest(&mut best, find_basic_auth(text));
    earliest(&mut best, find_credential(text));
    earliest(&mut best, find_mysql_password(text));
    best
}

fn alnum(b: Option<u8>) -> bool {
    b.is_some_and(|b| b.is_ascii_alphanumeric())
}

/// A body made of few distinct characters is a placeholder (`XXXX…`, `xxxx…`, `0000…`).
/// (AWS's documented example keys are not: the labelled corpus counts them as keys, since
/// agents copy them into real configurations.)
fn placeholder_body(body: &[u8]) -> bool {
    distinct_bytes(body) < 6
}

fn find_private_key(text: &str) -> Found {
    let framed = if text.contains("-----") {
        PRIVATE_KEY.find(text)
    } else {
        None
    };
    framed
        .or_else(|| PRIVATE_KEY_BARE.find(text))
        .map(|m| ("private_key", m.start(), m.end()))
}

/// An access key id may have lower-case words glued to it (`keyAKIA…`, `…K5Bok`: its own
/// characters are upper case and digits, so where it starts and ends is still plain), but not
/// another upper-case or digit run (then the 20 characters are part of a longer token).
fn find_aws_key_id(text: &str) -> Found {
    let glued_run = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    AWS_KEY_ID
        .find_iter(text)
        .find(|m| {
            !glued_run(byte_before(text, m.start()))
                && !glued_run(byte_at(text, m.end()))
                && !placeholder_body(&m.as_str().as_bytes()[4..])
        })
        .map(|m| ("aws_access_key", m.start(), m.end()))
}

/// The same id in another case (`akiaq3egz7lqj4xw2k5b`: a header name reaches an upstream in
/// lower case, and the key is its upper-case form). Stricter, since lower-case text is
/// everywhere: 20 characters standing alone (no letter or digit either side), with at least
/// two digits, as AWS's base-32 ids have.
fn find_aws_key_id_any_case(text: &str) -> Found {
    AWS_KEY_ID_ANY_CASE
        .find_iter(text)
        .find(|m| {
            let id = m.as_str().as_bytes();
            !alnum(byte_before(text, m.start()))
                && !alnum(byte_at(text, m.end()))
                && id.iter().filter(|b| b.is_ascii_digit()).count() >= 2
                && !placeholder_body(&id[4..])
        })
        .map(|m| ("aws_access_key", m.start(), m.end()))
}

fn find_aws_secret(text: &str) -> Found {
    for caps in AWS_SECRET.captures_iter(text) {
        let Some(v) = caps.get(1) else { continue };
        let next = byte_at(text, v.end());
        if next.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'+') {
            continue;
        }
        if !placeholder_body(v.as_str().as_bytes()) {
            return Some(("aws_secret_key", v.start(), v.end()));
        }
    }
    None
}

fn find_github(text: &str) -> Found {
    GITHUB
        .find_iter(text)
        .find(|m| {
            !alnum(byte_before(text, m.start())) && !placeholder_body(&m.as_str().as_bytes()[4..])
        })
        .map(|m| ("github_token", m.start(), m.end()))
}

fn class_mix(body: &[u8]) -> (bool, bool, bool) {
    (
        body.iter().any(u8::is_ascii_uppercase),
        body.iter().any(u8::is_ascii_lowercase),
        body.iter().any(u8::is_ascii_digit),
    )
}

fn find_sk_key(text: &str) -> Found {
    if !text.contains("sk-") {
        return None;
    }
    for m in SK_KEY.find_iter(text) {
        // `ask-…`, `task-…`, `disk-…` are words, not keys.
        if byte_before(text, m.start())
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            continue;
        }
        let body = m.as_str().as_bytes();
        let (upper, lower, digit) = class_mix(body);
        if placeholder_body(body) || distinct_bytes(body) < 12 || !digit || !(upper || lower) {
            continue;
        }
        let kind = if body.starts_with(b"sk-ant-") {
            "anthropic_key"
        } else {
            "openai_key"
        };
        return Some((kind, m.start(), m.end()));
    }
    None
}

/// Values that stand for a secret without being one: variable references, templates,
/// masks, and documentation placeholders.
fn placeholder_value(v: &str) -> bool {
    let b = v.as_bytes();
    if b.is_empty() || matches!(b[0], b'$' | b'<' | b'{' | b'%' | b'[' | b'(' | b'*') {
        return true;
    }
    if placeholder_body(b) {
        return true;
    }
    [
        "your",
        "placeholder",
        "changeme",
        "change_me",
        "redacted",
        "xxxx",
        "****",
        "replace",
        "insert",
        "dummy",
        "env(",
        "getenv",
        "environ",
    ]
    .iter()
    .any(|w| contains_ignore_ascii_case(b, w.as_bytes()))
}

fn find_url_credentials(text: &str) -> Found {
    if !text.contains("://") {
        return None;
    }
    for caps in URL_CREDENTIALS.captures_iter(text) {
        let Some(pw) = caps.get(1) else { continue };
        let p = pw.as_str();
        if placeholder_value(p)
            || ["password", "pass", "secret", "pwd"]
                .iter()
                .any(|w| p.eq_ignore_ascii_case(w))
        {
            continue;
        }
        return Some(("url_credentials", pw.start(), pw.end()));
    }
    None
}

fn find_basic_auth(text: &str) -> Found {
    for caps in BASIC_AUTH.captures_iter(text) {
        let Some(v) = caps.get(1) else { continue };
        let mut buf = [0u8; 192];
        if let Some(decoded) = base64_decode(v.as_str().as_bytes(), &mut buf) {
            if decoded.contains(&b':') {
                return Some(("basic_auth", v.start(), v.end()));
            }
        }
    }
    None
}

/// Whether the name that ends at the credential word starting at `at` is an upper-case
/// environment variable name (`PGPASSWORD=`), as opposed to a lower-case word (`mytoken=`).
fn env_style_name(text: &str, at: usize) -> bool {
    let b = text.as_bytes();
    let name_end = b[at..]
        .iter()
        .position(|c| !c.is_ascii_alphanumeric() && *c != b'_')
        .map_or(b.len(), |i| at + i);
    let name_start = b[..at]
        .iter()
        .rposition(|c| !c.is_ascii_alphanumeric() && *c != b'_')
        .map_or(0, |i| i + 1);
    b[name_start..name_end]
        .iter()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
}

/// Whether a value assigned to a credential name looks like an actual secret.
fn secret_looking_value(v: &str) -> bool {
    let b = v.as_bytes();
    if b.len() < 8 || placeholder_value(v) || b.contains(&b'(') || b.contains(&b')') {
        return false;
    }
    // Dotted identifiers (`self.password`, `settings.api_key`) are references.
    let dotted_ident = b.contains(&b'.')
        && v.split('.').all(|seg| {
            seg.bytes()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
                && seg.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
        });
    if dotted_ident || code_reference(v) {
        return false;
    }
    let (upper, lower, digit) = class_mix(b);
    let symbol = b.iter().any(|c| !c.is_ascii_alphanumeric());
    // Letters plus a digit or a symbol; pure words and pure numbers are not secrets.
    (upper || lower) && (digit || symbol) && distinct_bytes(b) >= 6
}

/// A value that is code, not a secret: a type path or generic (`token::Bracket`,
/// `Option<String>`, and `::UnitVariant` after `Token:`), or a snake_case or SCREAMING_CASE
/// identifier (`key_password`, `_ALLOWED_PRIVATE_KEY_TYPES`, `current_token`), each perhaps
/// followed by `,`, `;` or `{`. A value with digits (`Sup3r_S3cret`) or mixed case between
/// its underscores (`hf_AOtEsxtTFSl…`) is not taken for code.
fn code_reference(v: &str) -> bool {
    let v = v.trim_end_matches([',', ';', '{', '}']);
    let ident_chars = v
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b':' | b'<' | b'>'));
    if !ident_chars || v.bytes().any(|c| c.is_ascii_digit()) {
        return false;
    }
    let one_case = |seg: &str| {
        seg.bytes().all(|c| !c.is_ascii_uppercase()) || seg.bytes().all(|c| !c.is_ascii_lowercase())
    };
    let snake = v.contains('_') && v.split('_').all(one_case);
    v.starts_with(':') || v.contains("::") || v.contains('<') || snake
}

fn find_credential(text: &str) -> Found {
    // `find_iter` plus a manual split is much faster than `captures_iter` on long matches.
    for whole in CREDENTIAL.find_iter(text) {
        // The value follows the first `:`/`=`, optional whitespace and an optional quote
        // (the name contains none of these; the value contains no whitespace or quotes).
        let m = whole.as_str();
        let Some(sep) = m.find([':', '=']) else {
            continue;
        };
        let rest = m[sep + 1..].trim_start();
        let rest = rest.strip_prefix(['"', '\'']).unwrap_or(rest);
        let value_start = whole.end() - rest.len();
        // The name must start a word (`mytoken=` is not a credential name) but may end a
        // longer one after `_`/`-` (`GITHUB_TOKEN`, `client-secret`) or inside an upper-case
        // environment variable name (`PGPASSWORD`).
        if rest.len() > 256
            || (alnum(byte_before(text, whole.start())) && !env_style_name(text, whole.start()))
        {
            continue;
        }
        if secret_looking_value(rest) {
            return Some(("credential", value_start, whole.end()));
        }
    }
    None
}

fn find_mysql_password(text: &str) -> Found {
    if !text.contains("-p") {
        return None;
    }
    MYSQL_PASSWORD
        .captures_iter(text)
        .filter_map(|c| c.get(1))
        .find(|v| !placeholder_value(v.as_str()))
        .map(|v| ("credential", v.start(), v.end()))
}

/// Tracks, for increasing positions, whether a position lies in the body of a PEM block that
/// is not a private key (public keys, certificates: public material). Amortised linear.
struct PublicPem<'t> {
    text: &'t str,
    headers: Option<regex::CaptureMatches<'static, 't>>,
    /// Next header not yet reached: (body start, is public).
    pending: Option<(usize, bool)>,
    /// Current public block body: [start, end).
    block: Option<(usize, usize)>,
    /// Position of the first `-----END` at or after the last header body searched.
    end_cache: Option<usize>,
}

impl<'t> PublicPem<'t> {
    fn new(text: &'t str) -> Self {
        let headers = text
            .contains("-----BEGIN")
            .then(|| PEM_HEADER.captures_iter(text));
        PublicPem {
            text,
            headers,
            pending: None,
            block: None,
            end_cache: None,
        }
    }

    fn contains(&mut self, pos: usize) -> bool {
        let Some(headers) = self.headers.as_mut() else {
            return false;
        };
        loop {
            if self.pending.is_none() {
                self.pending = headers.next().and_then(|c| {
                    let (h, label) = (c.get(0)?, c.get(1)?);
                    Some((h.end(), !label.as_str().contains("PRIVATE")))
                });
            }
            let Some((body, public)) = self.pending else {
                break;
            };
            if body > pos {
                break;
            }
            let end = match self.end_cache {
                Some(e) if e >= body => e,
                _ => {
                    let e = self.text[body..]
                        .find("-----END")
                        .map_or(self.text.len(), |i| body + i);
                    self.end_cache = Some(e);
                    e
                }
            };
            self.block = public.then_some((body, end));
            self.pending = None;
        }
        self.block.is_some_and(|(s, e)| pos >= s && pos < e)
    }
}

/// Whether `run` is base64 of ordinary text (so: data, not a key).
/// Also true for base64 of an image a program embeds (an icon: PNG, GIF, JPEG), by its magic
/// bytes: data, not a credential. (Compressed files are not let through so: a key inside
/// gzip or zip is not read, so their base64 stays a random-looking token.)
fn decodes_to_text(run: &[u8]) -> bool {
    const MAGIC: [&[u8]; 3] = [b"\x89PNG\r\n\x1a\n", b"GIF8", b"\xff\xd8\xff"];
    let mut buf = [0u8; MAX_TOKEN_LEN];
    match base64_decode(run, &mut buf) {
        Some(d) if MAGIC.iter().any(|m| d.starts_with(m)) => true,
        Some(d) if !d.is_empty() => {
            let printable = d
                .iter()
                .filter(|&&b| (0x20..0x7f).contains(&b) || matches!(b, b'\n' | b'\r' | b'\t'))
                .count();
            printable * 100 >= d.len() * 95
        }
        _ => false,
    }
}

/// Is the run hex (optionally `0x`-prefixed, optionally dash-separated as in UUIDs)?
fn hex_body(run: &[u8]) -> Option<&[u8]> {
    let body = run.strip_prefix(b"0x").unwrap_or(run);
    let lower = body
        .iter()
        .all(|&b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-');
    let upper = body
        .iter()
        .all(|&b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b) || b == b'-');
    (lower || upper).then_some(body)
}

/// A credential word shortly before `start` on the same line.
fn labelled(text: &str, start: usize) -> bool {
    let from = start.saturating_sub(40);
    let window = &text.as_bytes()[from..start];
    let line = match window.iter().rposition(|&b| b == b'\n') {
        Some(i) => &window[i + 1..],
        None => window,
    };
    [
        "key",
        "secret",
        "token",
        "passw",
        "pwd",
        "private",
        "credential",
        "auth",
    ]
    .iter()
    .any(|w| contains_ignore_ascii_case(line, w.as_bytes()))
}

fn preceded_by(text: &str, start: usize, needles: &[&str], window: usize) -> bool {
    let from = start.saturating_sub(window);
    let w = &text.as_bytes()[from..start];
    needles
        .iter()
        .any(|n| contains_ignore_ascii_case(w, n.as_bytes()))
}

/// How far back a run's URL may start, bytes.
const URL_LOOKBACK: usize = 2048;
/// How much of a query key before a run is read for a credential word, bytes.
const QUERY_KEY_MAX: usize = 256;

/// The places in a text that say whether a run sits in a URL, found in one pass the first
/// time a run needs them, so that each run is judged in logarithmic time (a text of many
/// runs in long URLs would otherwise be read back 2 KiB per run).
struct UrlContext {
    /// Positions just after a character that ends a URL token (whitespace, quotes, `<>()` and
    /// backticks).
    breaks: Vec<usize>,
    /// Positions of `://`.
    schemes: Vec<usize>,
    /// Positions of `hook`, any case.
    hooks: Vec<usize>,
    /// Positions of `?`, `&` and `;`.
    queries: Vec<usize>,
}

impl UrlContext {
    fn new(text: &str) -> Self {
        let b = text.as_bytes();
        let mut c = UrlContext {
            breaks: Vec::new(),
            schemes: Vec::new(),
            hooks: Vec::new(),
            queries: Vec::new(),
        };
        for (i, &x) in b.iter().enumerate() {
            match x {
                x if x.is_ascii_whitespace() => c.breaks.push(i + 1),
                b'"' | b'\'' | b'<' | b'>' | b'(' | b'`' => c.breaks.push(i + 1),
                b'?' | b'&' | b';' => c.queries.push(i),
                b':' if b[i..].starts_with(b"://") => c.schemes.push(i),
                b'h' | b'H' if b.len() >= i + 4 && b[i..i + 4].eq_ignore_ascii_case(b"hook") => {
                    c.hooks.push(i)
                }
                _ => {}
            }
        }
        c
    }

    /// The last position in `at` (sorted) that is below `below`.
    fn last_below(at: &[usize], below: usize) -> Option<usize> {
        at[..at.partition_point(|&p| p < below)].last().copied()
    }

    /// True when a needle of `len` bytes starts at one of `at` within `from..start`.
    fn any_within(at: &[usize], from: usize, start: usize, len: usize) -> bool {
        let first = at.partition_point(|&p| p < from);
        at.get(first).is_some_and(|&p| p + len <= start)
    }

    /// Inside a URL, a random-looking run is usually an identifier (video id, content hash),
    /// unless a credential word labels it (`?token=`, `?sig=`) or the URL is a webhook (whose
    /// path is the secret). The URL is the token the run is in, at most [`URL_LOOKBACK`]
    /// bytes back.
    fn unlabelled_url_id(&self, text: &str, start: usize) -> bool {
        let window = start.saturating_sub(URL_LOOKBACK);
        let token_start = Self::last_below(&self.breaks, start + 1)
            .filter(|&p| p >= window)
            .unwrap_or(window);
        if !Self::any_within(&self.schemes, token_start, start, 3) {
            return false;
        }
        let webhook = Self::any_within(&self.hooks, token_start, start, 4);
        let query_key = Self::last_below(&self.queries, start)
            .filter(|&q| q >= token_start)
            .map(|q| {
                let from = (q + 1).max(start.saturating_sub(QUERY_KEY_MAX));
                &text.as_bytes()[from..start]
            });
        let labelled_key = query_key.is_some_and(|k| {
            [
                "key",
                "secret",
                "token",
                "passw",
                "pwd",
                "sig",
                "auth",
                "credential",
                "code",
            ]
            .iter()
            .any(|w| contains_ignore_ascii_case(k, w.as_bytes()))
        });
        !(webhook || labelled_key)
    }
}

fn find_high_entropy(text: &str) -> Found {
    let mut pem = PublicPem::new(text);
    let mut urls: Option<UrlContext> = None;
    for m in TOKEN_RUN.find_iter(text) {
        let run = m.as_str().as_bytes();
        let start = m.start();
        if run.len() > MAX_TOKEN_LEN || run[0] == b'/' {
            continue;
        }
        if let Some(hex) = hex_body(run) {
            let digits = hex.iter().filter(|b| b.is_ascii_digit()).count();
            let ok = hex.len() >= MIN_TOKEN_LEN
                && digits > 0
                && digits < hex.len()
                && shannon_entropy(hex) >= HEX_MIN_ENTROPY
                && labelled(text, start);
            if ok {
                return Some(("high_entropy", start, m.end()));
            }
            continue;
        }
        let (upper, lower, digit) = class_mix(run);
        if !(upper && lower && digit) || shannon_entropy(run) < base64_min_entropy(run.len()) {
            continue;
        }
        let sri = run.starts_with(b"sha") && run.iter().take(7).any(|&b| b == b'-');
        let cid = (run.starts_with(b"Qm") && run.len() == 46) || run.starts_with(b"bafy");
        if sri
            || cid
            || preceded_by(text, start, &["base64,"], 8)
            || preceded_by(
                text,
                start,
                &["ssh-rsa ", "ssh-ed25519 ", "ssh-dss ", "ecdsa-sha2-"],
                32,
            )
            || decodes_to_text(run)
            || pem.contains(start)
            || urls
                .get_or_insert_with(|| UrlContext::new(text))
                .unlabelled_url_id(text, start)
        {
            continue;
        }
        return Some(("high_entropy", start, m.end()));
    }
    None
}
