//! `url` conditions: a value read as a URL the way a browser or an HTTP client reads it (the
//! WHATWG URL Standard, by the `url` crate), then matched by host name, by address range and
//! by scheme. Whatever spelling reaches a host is judged by the host reached:
//! `http://evil@127.0.0.1/`, `http://2130706433/`, `http://0x7f.1/`, `http://127.1/`,
//! `HTTP://LOCALHOST./`, `http://127。0。0。1/`, `http://%31%32%37.0.0.1/`, `http:\\127.0.0.1`
//! and `http://[::ffff:127.0.0.1]/` are all loopback.
//!
//! A value that is not an absolute URL (`//127.0.0.1`, `127.0.0.1/x`), or whose host the
//! condition needs but cannot establish (`file:///etc/passwd`, `data:...`), is doubt: a rule
//! stronger than allow matches it, an allow rule does not. So is a URL that clients read
//! differently: a `\` in its authority (`http://evil.com\@169.254.169.254/` is `evil.com` to
//! a browser, `169.254.169.254` to curl and Python's `urlsplit`), or an RFC 3986 reading (the
//! authority after `//` ends at the first `/`, `?` or `#`; the host follows its last `@`) that
//! reaches another host than the URL Standard's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::shell::Tri;
use super::text;

/// A `url` condition as written: each list is optional, at least one is given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UrlPattern {
    /// Host names: `localhost`, `metadata.google.internal`, `*.internal` (any subdomain, at
    /// any depth, not the name itself), `*` (any host); an address here is a one-address range.
    pub hosts: Vec<String>,
    /// Address ranges in CIDR notation (`127.0.0.0/8`, `fc00::/7`) or single addresses.
    pub ips: Vec<String>,
    /// Schemes (`http`, `https`), compared without case.
    pub schemes: Vec<String>,
}

/// A host name pattern, in the form the URL parser gives host names (lowercase, IDNA ASCII,
/// no trailing dot).
#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPat {
    Any,
    Exact(String),
    /// `*.suffix`: names ending in `.suffix`.
    Subdomains(String),
}

/// An address range: the first `prefix` bits of `bits` (IPv4 in the low 32 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Net {
    v4: bool,
    bits: u128,
    prefix: u8,
}

impl Net {
    fn parse(text: &str) -> Result<Net, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR range"))?;
        let (v4, bits, max) = match addr {
            IpAddr::V4(a) => (true, u128::from(u32::from(a)), 32),
            IpAddr::V6(a) => (false, u128::from(a), 128),
        };
        let prefix = match prefix {
            None => max,
            // Plain decimal digits, no sign or leading zero (`/08` is refused).
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && n.to_string() == p => n,
                _ => return Err(format!("{text:?}: the prefix length must be 0 to {max}")),
            },
        };
        let net = Net { v4, bits, prefix };
        if net.mask(bits) != bits {
            return Err(format!(
                "{text:?} has bits set past its prefix length /{prefix}"
            ));
        }
        Ok(net)
    }

    fn mask(&self, bits: u128) -> u128 {
        let width = if self.v4 { 32 } else { 128 };
        if self.prefix == 0 {
            return 0;
        }
        let keep = u128::MAX << (width - u32::from(self.prefix));
        let keep = if self.v4 { keep & 0xffff_ffff } else { keep };
        bits & keep
    }

    fn contains_v4(&self, a: Ipv4Addr) -> bool {
        self.v4 && self.mask(u128::from(u32::from(a))) == self.bits
    }

    fn contains(&self, a: IpAddr) -> bool {
        match a {
            IpAddr::V4(a) => self.contains_v4(a),
            IpAddr::V6(a) => {
                (!self.v4 && self.mask(u128::from(a)) == self.bits)
                    || embedded_v4(a).is_some_and(|v4| self.contains_v4(v4))
            }
        }
    }
}

/// The IPv4 address an IPv6 address carries, where packets to it may reach that IPv4 host:
/// IPv4-mapped (`::ffff:127.0.0.1`), IPv4-compatible (`::127.0.0.1`, deprecated but still
/// accepted by some stacks; not `::` or `::1`) and the NAT64 well-known prefix
/// (`64:ff9b::127.0.0.1`).
fn embedded_v4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = a.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = a.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let compat = s[..6] == [0; 6] && u32::from(low) > 1;
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    (compat || nat64).then_some(low)
}

/// A compiled `url` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compiled {
    hosts: Vec<HostPat>,
    nets: Vec<Net>,
    schemes: Vec<String>,
}

/// A host name as the URL parser would give it for an `http:` URL, or an error.
fn normal_name(name: &str) -> Result<Host, String> {
    match url::Url::parse(&format!("http://{name}/")) {
        Ok(u) => Ok(host_of(&u)),
        Err(e) => Err(format!("{name:?} is not a host name ({e})")),
    }
}

impl Compiled {
    /// Checks and compiles a pattern. Errors name the bad entry.
    pub fn new(p: &UrlPattern) -> Result<Compiled, String> {
        if p.hosts.is_empty() && p.ips.is_empty() && p.schemes.is_empty() {
            return Err("a url condition needs `host`, `ip` or `scheme`".into());
        }
        let mut hosts = Vec::new();
        let mut nets = Vec::new();
        for h in &p.hosts {
            if h == "*" {
                hosts.push(HostPat::Any);
                continue;
            }
            if let Ok(net) = Net::parse(h) {
                nets.push(net);
                continue;
            }
            let (sub, name) = match h.strip_prefix("*.") {
                Some(rest) => (true, rest),
                None => (false, h.as_str()),
            };
            if name.contains(['*', '?', '[', '/']) {
                return Err(format!(
                    "host {h:?}: only a whole name, `*.name` (its subdomains) or `*` are allowed"
                ));
            }
            match normal_name(name)? {
                Host::Name(n) if sub => hosts.push(HostPat::Subdomains(n)),
                Host::Name(n) => hosts.push(HostPat::Exact(n)),
                Host::Ip(_) if sub => {
                    return Err(format!("host {h:?}: an address has no subdomains"))
                }
                Host::Ip(a) => nets.push(Net::parse(&a.to_string())?),
                Host::None => return Err(format!("host {h:?} is not a host name")),
            }
        }
        for ip in &p.ips {
            nets.push(Net::parse(ip)?);
        }
        let mut schemes = Vec::new();
        for s in &p.schemes {
            let s = s.strip_suffix(':').unwrap_or(s).to_ascii_lowercase();
            let ok = s.starts_with(|c: char| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
            if !ok {
                return Err(format!(
                    "scheme {s:?} is not a URL scheme (like http or https)"
                ));
            }
            schemes.push(s);
        }
        Ok(Compiled {
            hosts,
            nets,
            schemes,
        })
    }

    /// Whether the URL matches: its host is one of the names or in one of the ranges (when
    /// any are given) and its scheme is one of the schemes (when any are given).
    pub fn eval(&self, url: &Result<Parsed, String>) -> Tri {
        let u = match url {
            Ok(u) => u,
            Err(why) => return Tri::Unknown(why.clone()),
        };
        let scheme = yes(self.schemes.is_empty() || self.schemes.contains(&u.scheme));
        if matches!(scheme, Tri::No) || (self.hosts.is_empty() && self.nets.is_empty()) {
            return scheme;
        }
        match &u.host {
            Host::None => Tri::Unknown(format!("is a {}: URL without a host to compare", u.scheme)),
            Host::Name(n) => yes(self.hosts.iter().any(|p| match p {
                HostPat::Any => true,
                HostPat::Exact(e) => e == n,
                HostPat::Subdomains(s) => {
                    n.len() > s.len() + 1 && n.ends_with(s.as_str()) && {
                        n.as_bytes()[n.len() - s.len() - 1] == b'.'
                    }
                }
            })),
            Host::Ip(a) => {
                yes(self.hosts.contains(&HostPat::Any)
                    || self.nets.iter().any(|net| net.contains(*a)))
            }
        }
    }
}

fn yes(b: bool) -> Tri {
    if b {
        Tri::Yes
    } else {
        Tri::No
    }
}

/// Where a URL goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// A host name: lowercase, IDNA ASCII, trailing dots removed.
    Name(String),
    /// An address (every IPv4 spelling the URL Standard accepts: `2130706433`, `0x7f.1`).
    Ip(IpAddr),
    /// No host (`file:///x`, `data:`, `mailto:`).
    None,
}

/// A URL as far as conditions need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// Lowercase scheme, without `:`.
    pub scheme: String,
    /// Its host.
    pub host: Host,
}

fn host_of(u: &url::Url) -> Host {
    match u.host() {
        Some(url::Host::Ipv4(a)) => Host::Ip(IpAddr::V4(a)),
        Some(url::Host::Ipv6(a)) => Host::Ip(IpAddr::V6(a)),
        Some(url::Host::Domain(d)) => Host::Name(d.trim_end_matches('.').to_ascii_lowercase()),
        None => Host::None,
    }
}

/// Reads `text` as an absolute URL. A host of a scheme the URL Standard does not know
/// (`gopher://2130706433/`: an opaque host) is read as an `http:` host would be, since the
/// client that fetches it may; one that cannot be read so is an error. Errors say why, for
/// the doubt in a decision's reason.
pub fn parse(text: &str) -> Result<Parsed, String> {
    let u = url::Url::parse(text)
        .map_err(|e| format!("= {} is not an absolute URL ({e})", text::preview(text)))?;
    let host = match host_of(&u) {
        Host::Name(n) if !u.is_special() => {
            let decoded: String = percent_decode(&n);
            // Escaped delimiters would change what the host is, depending on the client.
            if decoded.contains(['/', '\\', '@', '?', '#', ':']) {
                return Err(format!(
                    "= {}: its host {} holds an escaped delimiter",
                    text::preview(text),
                    text::preview(&decoded)
                ));
            }
            normal_name(&decoded).map_err(|e| format!("= {}: its host {e}", text::preview(text)))?
        }
        h => h,
    };
    if let Some(why) = readings_disagree(text, &host) {
        return Err(format!("= {}: {why}", text::preview(text)));
    }
    Ok(Parsed {
        scheme: u.scheme().to_string(),
        host,
    })
}

/// Why clients other than browsers may reach another host than `host` (the URL Standard's
/// reading of `text`, which parsed): a `\` in the authority, or an RFC 3986 host that differs.
/// `None` when they agree, or when the URL Standard finds no host (already doubt).
fn readings_disagree(text: &str, host: &Host) -> Option<String> {
    if *host == Host::None {
        return None;
    }
    // As the URL Standard does: drop surrounding C0 controls and spaces, and tabs and
    // newlines anywhere. The text parsed as absolute, so the first `:` ends its scheme.
    let clean: String = text
        .trim_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let (_, rest) = clean.split_once(':')?;
    let after = rest.trim_start_matches(['/', '\\']);
    let authority = after.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('\\') {
        return Some(format!(
            "its authority {} holds a backslash, which clients read differently",
            text::preview(authority)
        ));
    }
    if rest.len() - after.len() != 2 || !rest.starts_with("//") {
        return None;
    }
    let rfc_host = without_port(authority.rsplit_once('@').map_or(authority, |(_, h)| h));
    match normal_name(rfc_host) {
        Ok(h) if h == *host => None,
        _ => Some(format!(
            "RFC 3986 reads its host as {}, the URL Standard does not",
            text::preview(rfc_host)
        )),
    }
}

/// `host[:port]` without the port (`[v6]:port` keeps its brackets); as is if what follows
/// the last `:` is not a port.
fn without_port(hostport: &str) -> &str {
    if hostport.starts_with('[') {
        return hostport.find(']').map_or(hostport, |i| &hostport[..=i]);
    }
    match hostport.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => hostport,
    }
}

/// Undoes `%XX` escapes (an opaque host keeps them); invalid UTF-8 is replaced, which makes
/// the host unreadable (an error), never another name. The detectors' percent view
/// (`detect::decode`) reads text through it too.
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn internal() -> Compiled {
        Compiled::new(&UrlPattern {
            hosts: vec![
                "localhost".into(),
                "*.localhost".into(),
                "metadata.google.internal".into(),
                "*.internal".into(),
            ],
            ips: [
                "0.0.0.0/8",
                "127.0.0.0/8",
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "169.254.0.0/16",
                "::/128",
                "::1/128",
                "fe80::/10",
                "fc00::/7",
            ]
            .map(String::from)
            .to_vec(),
            schemes: vec![],
        })
        .unwrap()
    }

    fn judge(c: &Compiled, url: &str) -> Tri {
        c.eval(&parse(url))
    }

    #[test]
    fn every_spelling_of_an_internal_host_is_internal() {
        let c = internal();
        for url in [
            "http://127.0.0.1/",
            "http://evil@127.0.0.1/",
            "http://evil.com:pw@127.0.0.1:8080/x",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[::]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "HTTP://LOCALHOST/",
            "http://LocalHost:80/",
            "http://127\u{3002}0\u{3002}0\u{3002}1/",
            "http://127\u{ff0e}0\u{ff0e}0\u{ff0e}1/",
            "http://\u{ff11}\u{ff12}\u{ff17}.0.0.1/",
            "http://localhost./",
            "http://localhost../",
            "http://127.0.0.1./",
            "http://%31%32%37.0.0.1/",
            "http://%6c%6f%63%61%6c%68%6f%73%74/",
            "http:\\\\127.0.0.1",
            "http:/127.0.0.1/",
            "http:127.0.0.1",
            "https://metadata.google.internal/computeMetadata/v1/",
            "http://METADATA.google.internal./",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fe80::1]/",
            "http://[fd00:ec2::254]/",
            "http://10.1.2.3/",
            "http://172.31.255.255/",
            "http://192.168.1.1/",
            "http://x.y.localhost/",
            "http://loc\u{00ad}alhost/",
            "http://local\u{200b}host/",
            "ws://127.0.0.1/",
            "ftp://127.0.0.1/",
            "gopher://127.0.0.1:70/_x",
            "gopher://2130706433/",
            "gopher://LOCALHOST/",
            "gopher://%6c%6f%63%61%6c%68%6f%73%74/",
            "redis://127.0.0.1:6379/",
            " http://127.0.0.1/",
            "\thttp://127.0.0.1/\n",
        ] {
            assert_eq!(judge(&c, url), Tri::Yes, "{url}");
        }
    }

    #[test]
    fn outside_hosts_are_not_internal() {
        let c = internal();
        for url in [
            "https://example.com/",
            "http://127.0.0.1@example.com/",
            "http://localhost@example.com/",
            "http://8.8.8.8/",
            "http://172.32.0.1/",
            "http://[2001:db8::1]/",
            "http://[::ffff:8.8.8.8]/",
            "http://notlocalhost/",
            "http://localhost.example.com/",
            "http://internal/",
            "https://xn--bcher-kva.de/",
        ] {
            assert_eq!(judge(&c, url), Tri::No, "{url}");
        }
    }

    #[test]
    fn urls_without_a_host_or_that_do_not_parse_are_doubt() {
        let c = internal();
        for url in [
            "//127.0.0.1",
            "127.0.0.1/admin",
            "localhost",
            "",
            "file:///etc/passwd",
            "data:text/plain,hi",
            "javascript:alert(1)",
            "\u{ff48}ttp://127.0.0.1/",
            "http://1.2.3.4.5/",
            "http://999.1.1.1/",
            "http://exa mple.com/",
            "http://[::1/",
            "gopher://exa%20mple/",
            "gopher://127.0.0.1%2fx/",
            "gopher://x%40127.0.0.1/",
        ] {
            assert!(matches!(judge(&c, url), Tri::Unknown(_)), "{url:?}");
        }
    }

    #[test]
    fn urls_that_clients_read_differently_are_doubt() {
        let c = internal();
        for url in [
            // curl and Python's urlsplit: host 169.254.169.254; the URL Standard: evil.com.
            "http://evil.com\\@169.254.169.254/latest/meta-data/",
            "http:\\\\evil.com\\@169.254.169.254/",
            "https://evil.com\\@127.0.0.1:8080/x",
            "http://127.0.0.1\\x",
            "http:\\\\127.0.0.1\\x",
            "gopher://evil.com\\@127.0.0.1/",
        ] {
            assert!(matches!(judge(&c, url), Tri::Unknown(_)), "{url:?}");
        }
        // Readings that agree stay decided.
        assert_eq!(judge(&c, "http://evil.com:pw@127.0.0.1:8080/x"), Tri::Yes);
        assert_eq!(judge(&c, "http://[::1]:80/"), Tri::Yes);
        assert_eq!(judge(&c, "http://a@b@example.com/"), Tri::No);
        assert_eq!(judge(&c, "http://example.com/a\\b"), Tri::No);
        assert_eq!(judge(&c, "http://example.com?@127.0.0.1"), Tri::No);
        // Any other disagreement between the two readings is doubt too.
        let other = Host::Name("example.org".into());
        assert!(readings_disagree("http://u@example.com:80/", &other).is_some());
        let same = Host::Name("example.com".into());
        assert!(readings_disagree("http://u@EXAMPLE.com.:80/", &same).is_none());
    }

    #[test]
    fn schemes_and_hosts_must_both_hold_when_both_are_given() {
        let web = Compiled::new(&UrlPattern {
            schemes: vec!["http".into(), "HTTPS:".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(judge(&web, "HTTPS://example.com/"), Tri::Yes);
        assert_eq!(judge(&web, "file:///etc/passwd"), Tri::No);
        assert_eq!(judge(&web, "gopher://example.com/"), Tri::No);
        assert!(matches!(judge(&web, "//example.com/"), Tri::Unknown(_)));
        let both = Compiled::new(&UrlPattern {
            hosts: vec!["*.example.com".into()],
            schemes: vec!["http".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(judge(&both, "http://a.b.EXAMPLE.com./"), Tri::Yes);
        assert_eq!(judge(&both, "http://example.com/"), Tri::No, "not itself");
        assert_eq!(judge(&both, "http://badexample.com/"), Tri::No);
        assert_eq!(judge(&both, "https://a.example.com/"), Tri::No);
        assert_eq!(
            judge(&both, "file:///x"),
            Tri::No,
            "the scheme already says no"
        );
        let idn = Compiled::new(&UrlPattern {
            hosts: vec!["Bücher.de".into(), "10.0.0.1".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(judge(&idn, "http://xn--bcher-kva.de/"), Tri::Yes);
        assert_eq!(judge(&idn, "http://BÜCHER.de/"), Tri::Yes);
        assert_eq!(judge(&idn, "http://167772161/"), Tri::Yes);
    }

    #[test]
    fn bad_patterns_are_refused() {
        for (p, why) in [
            (UrlPattern::default(), "needs"),
            (
                UrlPattern {
                    ips: vec!["10.0.0.1/8".into()],
                    ..Default::default()
                },
                "bits set",
            ),
            (
                UrlPattern {
                    ips: vec!["10.0.0.0/33".into()],
                    ..Default::default()
                },
                "prefix",
            ),
            (
                UrlPattern {
                    ips: vec!["10.0.0.0/08".into()],
                    ..Default::default()
                },
                "prefix",
            ),
            (
                UrlPattern {
                    ips: vec!["localhost".into()],
                    ..Default::default()
                },
                "not an IP",
            ),
            (
                UrlPattern {
                    hosts: vec!["ex*ample.com".into()],
                    ..Default::default()
                },
                "only a whole name",
            ),
            (
                UrlPattern {
                    schemes: vec!["ht tp".into()],
                    ..Default::default()
                },
                "not a URL scheme",
            ),
        ] {
            let e = Compiled::new(&p).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }
}
