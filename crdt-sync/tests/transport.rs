//! The QUIC transport on real sockets (127.0.0.1, ephemeral ports): delivery both ways,
//! refusals (another CA, another protocol version, too many peers), reconnection after a
//! restart, the size and rate limits, and garbage datagrams.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc::Receiver;
use warden_sync::certs::{self, Identity, NodeName};
use warden_sync::transport::{
    Inbound, PeerState, PeerStatus, SendError, Transport, TransportConfig, TransportLimits,
};

const BOUND: Duration = Duration::from_secs(15);

/// A fresh cluster CA in a temporary directory.
fn cluster(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warden-transport-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    certs::init(&dir).unwrap();
    dir
}

/// `node`'s identity in cluster `dir` (issued on first use).
fn identity(dir: &std::path::Path, node: &str) -> Identity {
    let name = NodeName::new(node).unwrap();
    if !dir.join(format!("{node}.pem")).exists() {
        certs::issue(dir, &name).unwrap();
    }
    Identity::load(dir, &name).unwrap()
}

fn quick() -> TransportLimits {
    TransportLimits {
        backoff_initial_ms: 20,
        backoff_max_ms: 300,
        ..Default::default()
    }
}

async fn start(
    identity: Identity,
    listen: SocketAddr,
    peers: &[SocketAddr],
    tweak: impl FnOnce(&mut TransportConfig),
) -> (Transport, Receiver<Inbound>) {
    let mut cfg = TransportConfig::new(listen, identity);
    cfg.peers = peers.to_vec();
    cfg.limits = quick();
    tweak(&mut cfg);
    Transport::start(cfg).await.unwrap()
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// The next event that `want` picks, within [`BOUND`]; the events before it are returned too.
async fn wait_event<T>(
    rx: &mut Receiver<Inbound>,
    what: &str,
    mut want: impl FnMut(&Inbound) -> Option<T>,
) -> (T, Vec<Inbound>) {
    let mut skipped = Vec::new();
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let event = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {BOUND:?}; saw {skipped:?}"))
            .unwrap_or_else(|| panic!("events ended before {what}; saw {skipped:?}"));
        match want(&event) {
            Some(found) => return (found, skipped),
            None => skipped.push(event),
        }
    }
}

async fn wait_up(rx: &mut Receiver<Inbound>, peer: &str) -> Vec<Inbound> {
    let what = format!("Up of {peer}");
    wait_event(rx, &what, |e| {
        matches!(e, Inbound::Up { peer: p, .. } if p == peer).then_some(())
    })
    .await
    .1
}

async fn wait_message(rx: &mut Receiver<Inbound>, from: &str) -> Bytes {
    let what = format!("message from {from}");
    wait_event(rx, &what, |e| match e {
        Inbound::Message { peer, body } if peer == from => Some(body.clone()),
        _ => None,
    })
    .await
    .0
}

/// Polls `probe` until it holds, within [`BOUND`].
async fn wait_until(what: &str, mut probe: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + BOUND;
    while !probe() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {BOUND:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn status_of(t: &Transport, name: &str) -> Option<PeerStatus> {
    t.peers()
        .into_iter()
        .find(|p| p.name.as_deref() == Some(name))
}

fn status_at(t: &Transport, addr: SocketAddr) -> PeerStatus {
    t.peers()
        .into_iter()
        .find(|p| p.addr == addr)
        .expect("a configured address has a status")
}

/// Sends until `send` takes it (the link may be attached a moment after the Up event on the
/// other side).
async fn send_when_up(t: &Transport, peer: &str, body: impl Into<Bytes>) {
    let body = body.into();
    wait_until(&format!("send to {peer}"), || {
        match t.send(peer, body.clone()) {
            Ok(()) => true,
            Err(SendError::NotConnected(_)) => false,
            Err(e) => panic!("{e}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_exchange_messages_both_ways() {
    let dir = cluster("pair");
    let (b, mut b_rx) = start(identity(&dir, "b"), any_port(), &[], |_| {}).await;
    let (a, mut a_rx) = start(identity(&dir, "a"), any_port(), &[b.local_addr()], |_| {}).await;
    wait_up(&mut a_rx, "b").await;
    wait_up(&mut b_rx, "a").await;

    send_when_up(&a, "b", &b"from a"[..]).await;
    assert_eq!(
        wait_message(&mut b_rx, "a").await,
        Bytes::from_static(b"from a")
    );
    send_when_up(&b, "a", &b"from b"[..]).await;
    assert_eq!(
        wait_message(&mut a_rx, "b").await,
        Bytes::from_static(b"from b")
    );
    for i in 0..100u32 {
        a.send("b", Bytes::from(i.to_be_bytes().to_vec())).unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 100 {
        got.push(wait_message(&mut b_rx, "a").await);
    }
    got.sort();
    let want: Vec<Bytes> = (0..100u32)
        .map(|i| Bytes::from(i.to_be_bytes().to_vec()))
        .collect();
    assert_eq!(got, want, "every message once, in any order");

    let seen_by_a = status_of(&a, "b").unwrap();
    assert_eq!((seen_by_a.state, seen_by_a.dialed), (PeerState::Up, true));
    assert_eq!(seen_by_a.addr, b.local_addr());
    wait_until("b counts a's messages", || {
        let s = status_of(&b, "a").unwrap();
        s.messages_in == 101 && s.bytes_in == 6 + 400 && !s.dialed
    })
    .await;
    assert_eq!(b.bytes_total().0, 406);
    assert_eq!(a.bytes_total().1, 406);
    assert_eq!(a.node_name().as_str(), "a");
    assert!(matches!(
        a.send("nobody", Bytes::new()),
        Err(SendError::NotConnected(_))
    ));
    let huge = Bytes::from(vec![0; warden_sync::limits::MAX_MESSAGE_BYTES + 1]);
    assert!(matches!(a.send("b", huge), Err(SendError::TooLarge { .. })));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_dialing_each_other_keep_one_link_and_deliver() {
    let dir = cluster("mutual");
    // Both must know the other's address before starting: reserve two ports.
    let reserve = || {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (a_addr, b_addr) = (reserve(), reserve());
    let (a, mut a_rx) = start(identity(&dir, "a"), a_addr, &[b_addr], |_| {}).await;
    let (b, mut b_rx) = start(identity(&dir, "b"), b_addr, &[a_addr], |_| {}).await;
    wait_up(&mut a_rx, "b").await;
    wait_up(&mut b_rx, "a").await;
    for round in 0..20u8 {
        let body = Bytes::from(vec![round]);
        send_when_up(&a, "b", body.clone()).await;
        assert_eq!(wait_message(&mut b_rx, "a").await, body);
        send_when_up(&b, "a", body.clone()).await;
        assert_eq!(wait_message(&mut a_rx, "b").await, body);
    }
    // One entry per peer on each side, up; the configured address is the one shown.
    let a_sees: Vec<PeerStatus> = a.peers();
    assert_eq!(a_sees.len(), 1, "{a_sees:?}");
    assert_eq!((a_sees[0].state, a_sees[0].addr), (PeerState::Up, b_addr));
    assert_eq!(b.peers().len(), 1, "{:?}", b.peers());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_certificate_from_another_ca_is_refused_both_ways() {
    let (ours, theirs) = (cluster("ca-ours"), cluster("ca-theirs"));
    let (a, mut a_rx) = start(identity(&ours, "a"), any_port(), &[], |_| {}).await;
    // `c` holds a certificate from another CA. `ca.pem` is no secret, so it trusts ours too
    // (were it not to, it would refuse `a` itself, before `a` sees its certificate).
    let mut intruder = identity(&theirs, "c");
    intruder.ca_pem += &std::fs::read_to_string(ours.join("ca.pem")).unwrap();
    let (c, mut c_rx) = start(intruder, any_port(), &[a.local_addr()], |_| {}).await;

    // Being dialed: the accepting side refuses the client certificate, logs and counts it.
    wait_until("a refuses c", || a.refusals_total() >= 1).await;
    // The dialing side's handshake completed from its point of view (it verified `a` and
    // read its name): the refusal reaches it at its first read, the Hello, as a's TLS alert.
    wait_until("c hears of it", || {
        status_at(&c, a.local_addr()).refusals >= 1
    })
    .await;
    let at_c = status_at(&c, a.local_addr());
    let why = at_c.last_error.clone().unwrap();
    assert!(why.contains("refused this node: TLS"), "{why}");
    assert!(why.contains("UnknownIssuer"), "{why}");
    assert_eq!(
        at_c.name.as_deref(),
        Some("a"),
        "c's side of the handshake completed"
    );
    assert_ne!(at_c.state, PeerState::Up);

    // Dialing: `a2` refuses the server certificate of `c` during the handshake.
    let (a2, mut a2_rx) = start(identity(&ours, "a2"), any_port(), &[c.local_addr()], |_| {}).await;
    wait_until("a2 refuses c", || {
        status_at(&a2, c.local_addr()).refusals >= 1
    })
    .await;
    let at_a2 = status_at(&a2, c.local_addr());
    let why = at_a2.last_error.unwrap();
    assert!(
        why.starts_with("refused peer at") && why.contains("TLS"),
        "{why}"
    );
    assert!(why.contains("UnknownIssuer"), "{why}");
    assert_eq!(at_a2.name, None, "c was never trusted, so never named");
    wait_until("c counts it", || c.refusals_total() >= 2).await;

    // Nobody was ever up, and nothing was delivered.
    assert!(a.peers().is_empty(), "{:?}", a.peers());
    for rx in [&mut a_rx, &mut c_rx, &mut a2_rx] {
        assert!(rx.try_recv().is_err(), "no event at all");
    }
    for t in [a, c, a2] {
        t.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_goes_down_then_up_again() {
    let dir = cluster("restart");
    let (b, mut b_rx) = start(identity(&dir, "b"), any_port(), &[], |_| {}).await;
    let b_addr = b.local_addr();
    let (a, mut a_rx) = start(identity(&dir, "a"), any_port(), &[b_addr], |_| {}).await;
    wait_up(&mut a_rx, "b").await;
    wait_up(&mut b_rx, "a").await;

    b.shutdown().await;
    let (reason, _) = wait_event(&mut a_rx, "Down of b", |e| match e {
        Inbound::Down { peer, reason } if peer == "b" => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(reason.contains("shut down"), "{reason}");
    assert_ne!(status_of(&a, "b").unwrap().state, PeerState::Up);
    assert!(
        b_rx.recv().await.is_none(),
        "a stopped transport's events end"
    );

    // The same address again (the old socket may take a moment to be released).
    let mut restarted = None;
    for _ in 0..200 {
        let mut cfg = TransportConfig::new(b_addr, identity(&dir, "b"));
        cfg.limits = quick();
        match Transport::start(cfg).await {
            Ok(started) => {
                restarted = Some(started);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    let (b, mut b_rx) = restarted.expect("b's address is free again");
    wait_up(&mut a_rx, "b").await;
    wait_up(&mut b_rx, "a").await;
    send_when_up(&a, "b", &b"again"[..]).await;
    assert_eq!(
        wait_message(&mut b_rx, "a").await,
        Bytes::from_static(b"again")
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_dropped_and_the_connection_lives_on() {
    let dir = cluster("oversize");
    let (b, mut b_rx) = start(identity(&dir, "b"), any_port(), &[], |cfg| {
        cfg.limits.message_bytes_max = 1_024;
    })
    .await;
    let (a, mut a_rx) = start(identity(&dir, "a"), any_port(), &[b.local_addr()], |_| {}).await;
    wait_up(&mut a_rx, "b").await;
    wait_up(&mut b_rx, "a").await;
    send_when_up(&a, "b", vec![1; 4_096]).await;
    wait_until("b drops it", || {
        status_of(&b, "a").unwrap().dropped_oversize == 1
    })
    .await;
    a.send("b", Bytes::from_static(&[2; 1_024])).unwrap();
    assert_eq!(
        wait_message(&mut b_rx, "a").await,
        Bytes::from_static(&[2; 1_024])
    );
    let s = status_of(&b, "a").unwrap();
    assert_eq!((s.state, s.messages_in), (PeerState::Up, 1));
    // b's own sends are bounded by its limit too.
    let err = b.send("a", Bytes::from_static(&[0; 1_025])).unwrap_err();
    assert_eq!(
        err,
        SendError::TooLarge {
            len: 1_025,
            max: 1_024
        }
    );
    assert!(
        a_rx.try_recv().is_err() && b_rx.try_recv().is_err(),
        "no Down"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_beyond_the_rate_are_dropped_and_counted() {
    let dir = cluster("rate");
    let (b, mut b_rx) = start(identity(&dir, "b"), any_port(), &[], |cfg| {
        cfg.limits.messages_per_second = 5;
    })
    .await;
    let (a, mut a_rx) = start(identity(&dir, "a"), any_port(), &[b.local_addr()], |_| {}).await;
    wait_up(&mut a_rx, "b").await;
    wait_up(&mut b_rx, "a").await;
    send_when_up(&a, "b", &b"0"[..]).await;
    for _ in 1..50 {
        a.send("b", Bytes::from_static(b"x")).unwrap();
    }
    wait_until("all 50 accounted for", || {
        let s = status_of(&b, "a").unwrap();
        s.messages_in + s.dropped_rate == 50
    })
    .await;
    let s = status_of(&b, "a").unwrap();
    assert!(s.dropped_rate >= 30, "{s:?}");
    assert_eq!(s.state, PeerState::Up);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_beyond_the_limit_are_refused() {
    let dir = cluster("peers-max");
    let (b, mut b_rx) = start(identity(&dir, "b"), any_port(), &[], |cfg| {
        cfg.limits.peers_max = 1;
    })
    .await;
    let (a, mut a_rx) = start(identity(&dir, "a"), any_port(), &[b.local_addr()], |_| {}).await;
    wait_up(&mut a_rx, "b").await;
    wait_up(&mut b_rx, "a").await;
    let (c, _c_rx) = start(identity(&dir, "c"), any_port(), &[b.local_addr()], |_| {}).await;
    wait_until("c is refused", || {
        status_of(&b, "c").is_some_and(|s| s.refusals >= 1)
    })
    .await;
    let why = status_of(&b, "c").unwrap().last_error.unwrap();
    assert!(why.contains("too many peers"), "{why}");
    wait_until("c hears it", || {
        status_of(&c, "b").is_some_and(|s| s.refusals >= 1)
    })
    .await;
    let why = status_of(&c, "b").unwrap().last_error.unwrap();
    assert!(
        why.contains("peer `b`") && why.contains("refused this node: too many peers"),
        "{why}"
    );
    assert_ne!(status_of(&c, "b").unwrap().state, PeerState::Up);
    assert_eq!(status_of(&b, "a").unwrap().state, PeerState::Up);
    for t in [a, b, c] {
        t.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_of_another_protocol_version_is_refused() {
    let dir = cluster("version");
    let (b, mut b_rx) = start(identity(&dir, "b"), any_port(), &[], |_| {}).await;
    let (a, mut a_rx) = start(identity(&dir, "a"), any_port(), &[b.local_addr()], |cfg| {
        cfg.protocol_version = 2;
    })
    .await;
    wait_until("b refuses a", || {
        status_of(&b, "a").is_some_and(|s| s.refusals >= 1)
    })
    .await;
    let s = status_of(&b, "a").unwrap();
    // Both read the other's Hello at once: the last word may be b's or a's.
    let why = s.last_error.unwrap();
    assert!(
        why == format!(
            "refused peer `a` ({}): protocol version 2, this node speaks 1",
            a.local_addr()
        ) || why.contains("refused this node: it speaks protocol version 2 only, not 1"),
        "{why}"
    );
    assert_ne!(s.state, PeerState::Up);
    wait_until("a hears it", || status_at(&a, b.local_addr()).refusals >= 1).await;
    // Whichever side read the other's Hello first, a's record says it plainly.
    let why = status_at(&a, b.local_addr()).last_error.unwrap();
    assert!(
        why.contains("refused this node: it speaks protocol version 1 only, not 2")
            || why.contains("protocol version 1, this node speaks 2"),
        "{why}"
    );
    assert!(
        a_rx.try_recv().is_err() && b_rx.try_recv().is_err(),
        "never up"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_never_crash_it_and_it_delivers_afterwards() {
    let dir = cluster("garbage");
    let (b, mut b_rx) = start(identity(&dir, "b"), any_port(), &[], |_| {}).await;
    let (a, mut a_rx) = start(identity(&dir, "a"), any_port(), &[b.local_addr()], |_| {}).await;
    wait_up(&mut a_rx, "b").await;
    wait_up(&mut b_rx, "a").await;

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut seed = 0x5eed_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..3_000usize {
        let len = (next() % 1_500) as usize;
        let mut datagram: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        match i % 4 {
            // A QUIC v1 long header (Initial), then junk: parsed further by quinn.
            0 if len >= 6 => datagram[..5].copy_from_slice(&[0xc0, 0, 0, 0, 1]),
            // A short header, as for an established connection.
            1 if len >= 1 => datagram[0] = 0x40 | (datagram[0] & 0x3f),
            // Truncated to a few bytes.
            2 => datagram.truncate(len % 8),
            _ => {}
        }
        let _ = socket.send_to(&datagram, b.local_addr());
    }
    send_when_up(&a, "b", &b"still here"[..]).await;
    assert_eq!(
        wait_message(&mut b_rx, "a").await,
        Bytes::from_static(b"still here")
    );
    // And it still takes new connections.
    let (c, mut c_rx) = start(identity(&dir, "c"), any_port(), &[b.local_addr()], |_| {}).await;
    wait_up(&mut c_rx, "b").await;
    send_when_up(&c, "b", &b"new"[..]).await;
    assert_eq!(
        wait_message(&mut b_rx, "c").await,
        Bytes::from_static(b"new")
    );
    for t in [a, b, c] {
        t.shutdown().await;
    }
}

/// A UDP relay between one client and a target the test can change, and cut (every datagram
/// dropped, both ways): a crash whose close never arrives.
struct Relay {
    addr: SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    target: std::sync::Arc<std::sync::Mutex<SocketAddr>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let target = std::sync::Arc::new(std::sync::Mutex::new(target));
        let (cut2, target2) = (cut.clone(), target.clone());
        let task = tokio::spawn(async move {
            let mut buf = vec![0; 65_536];
            let mut client = None;
            while let Ok((len, from)) = socket.recv_from(&mut buf).await {
                if cut2.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                let target = *target2.lock().unwrap();
                let to = if from == target { client } else { Some(target) };
                if from != target {
                    client = Some(from);
                }
                if let Some(to) = to {
                    let _ = socket.send_to(&buf[..len], to).await;
                }
            }
        });
        Relay {
            addr,
            cut,
            target,
            task,
        }
    }

    fn cut(&self, cut: bool) {
        self.cut.store(cut, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `a` dials `b` through a relay; the relay is cut and `b` stops (its close is lost, as in a
/// crash). Returns a's transport and events, and the cluster.
async fn crashed_pair(tag: &str) -> (PathBuf, Transport, Receiver<Inbound>, Relay) {
    let dir = cluster(tag);
    let (b, mut b_rx) = start(identity(&dir, "b"), any_port(), &[], |_| {}).await;
    let relay = Relay::start(b.local_addr()).await;
    let (a, mut a_rx) = start(identity(&dir, "a"), any_port(), &[relay.addr], |_| {}).await;
    wait_up(&mut a_rx, "b").await;
    wait_up(&mut b_rx, "a").await;
    relay.cut(true);
    b.shutdown().await;
    assert_eq!(
        status_of(&a, "b").unwrap().state,
        PeerState::Up,
        "a has not heard"
    );
    (dir, a, a_rx, relay)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_peer_back_at_the_same_address_resets_the_stale_link_at_once() {
    let (dir, a, mut a_rx, relay) = crashed_pair("reset").await;
    // b comes back (same key, new port behind the same relay address).
    let (b, mut b_rx) = start(identity(&dir, "b"), any_port(), &[], |_| {}).await;
    *relay.target.lock().unwrap() = b.local_addr();
    let back = tokio::time::Instant::now();
    relay.cut(false);
    // a's next packet on the old connection reaches the new b, whose stateless reset a
    // accepts (the reset key comes from b's private key): Down long before the idle timeout.
    let (reason, _) = wait_event(&mut a_rx, "Down of b", |e| match e {
        Inbound::Down { peer, reason } if peer == "b" => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(reason.contains("reset"), "{reason}");
    let idle = Duration::from_millis(warden_sync::limits::IDLE_TIMEOUT_MS);
    assert!(back.elapsed() < idle, "{:?}", back.elapsed());
    wait_up(&mut a_rx, "b").await;
    wait_up(&mut b_rx, "a").await;
    send_when_up(&a, "b", &b"back"[..]).await;
    assert_eq!(
        wait_message(&mut b_rx, "a").await,
        Bytes::from_static(b"back")
    );
    relay.task.abort();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_peer_that_dials_back_replaces_its_stale_link() {
    let (dir, a, mut a_rx, relay) = crashed_pair("redial").await;
    // b comes back elsewhere and dials a itself; the relay stays cut, so a still holds the
    // old connection when the new one's Hello (another instance) arrives.
    let (b, mut b_rx) = start(identity(&dir, "b"), any_port(), &[a.local_addr()], |_| {}).await;
    let (reason, skipped) = wait_event(&mut a_rx, "Down of b", |e| match e {
        Inbound::Down { peer, reason } if peer == "b" => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert_eq!(reason, "the peer restarted");
    assert!(skipped.is_empty(), "{skipped:?}");
    let next = a_rx.recv().await.unwrap();
    assert!(
        matches!(&next, Inbound::Up { peer, .. } if peer == "b"),
        "{next:?}"
    );
    wait_up(&mut b_rx, "a").await;
    send_when_up(&a, "b", &b"new link"[..]).await;
    assert_eq!(
        wait_message(&mut b_rx, "a").await,
        Bytes::from_static(b"new link")
    );
    relay.task.abort();
    a.shutdown().await;
    b.shutdown().await;
}
