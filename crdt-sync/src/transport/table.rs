//! The peer table: configured addresses, named peers, the one link per peer, their counters.
//! Pure bookkeeping under one mutex: no I/O, no waiting.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{codes, PeerState, PeerStatus};
use crate::certs::NodeName;

/// The connection that carries messages to and from one peer.
pub(super) struct Link {
    /// Unique within this transport, to tell a link from its replacement.
    pub id: u64,
    pub conn: quinn::Connection,
    /// The peer's instance number (its Hello).
    pub instance: u64,
    /// The node that dialed this connection.
    pub dialer: NodeName,
    /// The writer's queue.
    pub queue: mpsc::Sender<Bytes>,
}

/// Per-peer counters (messages and their bytes).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Counters {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub dropped_rate: u64,
    pub dropped_oversize: u64,
    pub dropped_stalled: u64,
}

/// An error with when it happened, so the newest of two can be shown.
type Noted = Option<(SystemTime, String)>;

/// A node we have had a verified connection with (or that was refused by name).
struct Peer {
    addr: SocketAddr,
    since: SystemTime,
    link: Option<Link>,
    counters: Counters,
    refusals: u64,
    last_error: Noted,
}

/// A configured address.
struct Dial {
    addr: SocketAddr,
    /// The node that answered there last.
    name: Option<NodeName>,
    state: PeerState,
    since: SystemTime,
    refusals: u64,
    last_error: Noted,
}

/// What [`Table::attach`] did with a new connection.
pub(super) enum Attach {
    /// It is the peer's link; the peer was not up before.
    Up,
    /// It replaced the link of the peer's previous instance (the peer restarted): close the
    /// old one; the core hears Down then Up.
    Restarted(Link),
    /// It replaced a duplicate link of the same instance: close the old one quietly.
    Replaced(Link),
    /// It is refused: close it with this code and reason.
    Refused(quinn::VarInt, &'static str),
}

pub(super) struct Table {
    peers: BTreeMap<NodeName, Peer>,
    dials: Vec<Dial>,
    /// Connections being set up or established.
    pub connections: usize,
    next_link: u64,
    /// Peers linked at once at most.
    peers_max: usize,
}

impl Table {
    pub fn new(dials: &[SocketAddr], peers_max: usize) -> Table {
        let now = SystemTime::now();
        let dials = dials
            .iter()
            .map(|&addr| Dial {
                addr,
                name: None,
                state: PeerState::Connecting,
                since: now,
                refusals: 0,
                last_error: None,
            })
            .collect();
        Table {
            peers: BTreeMap::new(),
            dials,
            connections: 0,
            next_link: 0,
            peers_max,
        }
    }

    /// A fresh link id.
    pub fn link_id(&mut self) -> u64 {
        self.next_link += 1;
        self.next_link
    }

    /// The send queue of `peer`'s link, if it is up.
    pub fn queue(&self, peer: &str) -> Option<mpsc::Sender<Bytes>> {
        let name = NodeName::new(peer).ok()?;
        self.peers
            .get(&name)?
            .link
            .as_ref()
            .map(|l| l.queue.clone())
    }

    /// Installs `link` as `name`'s link if the rules of the module doc allow it; `me` is this
    /// node's name.
    pub fn attach(&mut self, me: &NodeName, name: &NodeName, link: Link) -> Attach {
        enum Rule {
            Up,
            Restarted,
            Replaced,
        }
        let addr = link.conn.remote_address();
        let linked = self.peers.values().filter(|p| p.link.is_some()).count();
        let rule = match self.peers.get(name).and_then(|p| p.link.as_ref()) {
            None if linked >= self.peers_max => {
                return Attach::Refused(codes::TOO_MANY_PEERS, "too many peers")
            }
            None => Rule::Up,
            Some(old) if old.instance != link.instance => Rule::Restarted,
            // The dialer knows best which of its own connections is alive: the newer.
            Some(old) if old.dialer == link.dialer => Rule::Replaced,
            Some(old) => {
                let preferred = me.min(name);
                if link.dialer != *preferred || old.dialer == *preferred {
                    return Attach::Refused(codes::DUPLICATE, "a connection with this peer exists");
                }
                Rule::Replaced
            }
        };
        // Nodes dial from their listening socket: a connection from a configured address
        // is the node configured there, even before our own dial reaches it.
        for dial in self
            .dials
            .iter_mut()
            .filter(|d| d.addr == addr && d.name.is_none())
        {
            dial.name = Some(name.clone());
        }
        let peer = self.peer_mut(name, addr);
        peer.addr = addr;
        let old = peer.link.replace(link);
        match rule {
            Rule::Up | Rule::Restarted => peer.since = SystemTime::now(),
            Rule::Replaced => {}
        }
        match (rule, old) {
            (Rule::Up, None) => Attach::Up,
            (Rule::Restarted, Some(old)) => Attach::Restarted(old),
            (Rule::Replaced, Some(old)) => Attach::Replaced(old),
            _ => unreachable!("a link is replaced exactly when there was one"),
        }
    }

    /// Removes `name`'s link if it is still link `id`; true if it was (the peer is down).
    pub fn detach(&mut self, name: &NodeName, id: u64, reason: &str) -> bool {
        let Some(peer) = self.peers.get_mut(name) else {
            return false;
        };
        if peer.link.as_ref().map(|l| l.id) != Some(id) {
            return false;
        }
        peer.link = None;
        peer.since = SystemTime::now();
        peer.last_error = Some((peer.since, reason.to_owned()));
        true
    }

    /// Whether the peer last seen at configured address `dial` is up now.
    pub fn dial_peer_up(&self, dial: usize) -> bool {
        let name = self.dials[dial].name.as_ref();
        name.and_then(|n| self.peers.get(n))
            .is_some_and(|p| p.link.is_some())
    }

    /// Records that the node at configured address `dial` is `name`.
    pub fn dial_named(&mut self, dial: usize, name: &NodeName) {
        self.dials[dial].name = Some(name.clone());
    }

    /// Sets a configured address's state (and its last error, if any).
    pub fn dial_state(&mut self, dial: usize, state: PeerState, error: Option<String>) {
        let dial = &mut self.dials[dial];
        if dial.state != state {
            dial.state = state;
            dial.since = SystemTime::now();
        }
        if let Some(error) = error {
            dial.last_error = Some((SystemTime::now(), error));
        }
    }

    /// Counts a refusal: on the configured address if this side dialed, else on the named
    /// peer; a refusal of an unnamed caller is only in the transport's total.
    pub fn refused(
        &mut self,
        dial: Option<usize>,
        name: Option<&NodeName>,
        addr: SocketAddr,
        line: &str,
    ) {
        let noted = Some((SystemTime::now(), line.to_owned()));
        if let Some(dial) = dial {
            let dial = &mut self.dials[dial];
            dial.refusals += 1;
            dial.last_error = noted;
        } else if let Some(name) = name {
            let peer = self.peer_mut(name, addr);
            peer.refusals += 1;
            peer.last_error = noted;
        }
    }

    /// Updates `name`'s counters.
    pub fn count(&mut self, name: &NodeName, update: impl FnOnce(&mut Counters)) {
        if let Some(peer) = self.peers.get_mut(name) {
            update(&mut peer.counters);
        }
    }

    /// Drops every link (their queues close, so their writers end).
    pub fn clear_links(&mut self) {
        for peer in self.peers.values_mut() {
            peer.link = None;
        }
    }

    /// The status of every named peer and of every configured address not yet matched to
    /// one.
    pub fn status(&self) -> Vec<PeerStatus> {
        let mut out: Vec<PeerStatus> = Vec::with_capacity(self.peers.len() + self.dials.len());
        for (name, peer) in &self.peers {
            let dials: Vec<&Dial> = self
                .dials
                .iter()
                .filter(|d| d.name.as_ref() == Some(name))
                .collect();
            let connecting = dials.iter().any(|d| d.state == PeerState::Connecting);
            let state = match (&peer.link, connecting) {
                (Some(_), _) => PeerState::Up,
                (None, true) => PeerState::Connecting,
                (None, false) => PeerState::Down,
            };
            let last_error = dials
                .iter()
                .map(|d| &d.last_error)
                .chain([&peer.last_error])
                .flatten()
                .max_by_key(|(at, _)| *at)
                .map(|(_, e)| e.clone());
            let c = peer.counters;
            out.push(PeerStatus {
                name: Some(name.to_string()),
                addr: dials.first().map_or(peer.addr, |d| d.addr),
                dialed: !dials.is_empty(),
                state,
                since: peer.since,
                bytes_in: c.bytes_in,
                bytes_out: c.bytes_out,
                messages_in: c.messages_in,
                messages_out: c.messages_out,
                dropped_rate: c.dropped_rate,
                dropped_oversize: c.dropped_oversize,
                dropped_stalled: c.dropped_stalled,
                refusals: peer.refusals + dials.iter().map(|d| d.refusals).sum::<u64>(),
                last_error,
            });
        }
        for d in &self.dials {
            if d.name.as_ref().is_some_and(|n| self.peers.contains_key(n)) {
                continue;
            }
            out.push(PeerStatus {
                name: d.name.as_ref().map(NodeName::to_string),
                addr: d.addr,
                dialed: true,
                state: d.state,
                since: d.since,
                bytes_in: 0,
                bytes_out: 0,
                messages_in: 0,
                messages_out: 0,
                dropped_rate: 0,
                dropped_oversize: 0,
                dropped_stalled: 0,
                refusals: d.refusals,
                last_error: d.last_error.as_ref().map(|(_, e)| e.clone()),
            });
        }
        out
    }

    /// `name`'s record, made if new. The map is bounded: past twice the peers limit, the peer
    /// down for longest that no configured address names is forgotten first.
    fn peer_mut(&mut self, name: &NodeName, addr: SocketAddr) -> &mut Peer {
        if !self.peers.contains_key(name) {
            self.forget_one_if_full();
        }
        self.peers.entry(name.clone()).or_insert_with(|| Peer {
            addr,
            since: SystemTime::now(),
            link: None,
            counters: Counters::default(),
            refusals: 0,
            last_error: None,
        })
    }

    fn forget_one_if_full(&mut self) {
        if self.peers.len() < 2 * self.peers_max {
            return;
        }
        let dialed = |n: &NodeName| self.dials.iter().any(|d| d.name.as_ref() == Some(n));
        let oldest = self
            .peers
            .iter()
            .filter(|(n, p)| p.link.is_none() && !dialed(n))
            .min_by_key(|(_, p)| p.since)
            .map(|(n, _)| n.clone());
        if let Some(name) = oldest {
            self.peers.remove(&name);
        }
    }
}
