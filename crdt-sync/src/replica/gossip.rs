//! The protocol with the peers: hellos, deltas with acknowledgements, probes.

use super::*;

/// Most items in one delta; a larger backlog goes out over several messages.
pub const DELTA_ITEMS_MAX: usize = 256;

/// Most bytes (estimated generously, see [`Item::size_hint`]) in one delta. An item above it
/// goes alone.
pub const DELTA_BYTES_BUDGET: usize = 256 * 1024;

impl<L: LocalLedger> Replica<L> {
    /// The transport connected to member `peer`: say hello.
    pub fn on_connected(&mut self, peer: NodeIx) -> Vec<Output> {
        let link = &mut self.links[usize::from(peer)];
        link.session = None;
        link.connected = true;
        vec![self.hello(peer, false)]
    }

    fn hello(&self, to: NodeIx, reply: bool) -> Output {
        Output::Send {
            to,
            msg: Message::Hello {
                node: self.cfg.members.name(self.me()).to_owned(),
                session: self.cfg.session,
                digest: self.cfg.digest(),
                reply,
            },
        }
    }

    /// The link to `peer` went down: nothing is sent to it until its next Hello.
    pub fn on_disconnected(&mut self, peer: NodeIx) {
        let link = &mut self.links[usize::from(peer)];
        link.session = None;
        link.connected = false;
    }

    /// Whether `peer` is connected and said hello.
    pub fn is_up(&self, peer: NodeIx) -> bool {
        self.links[usize::from(peer)].session.is_some()
    }

    /// Our changes `peer` has not acknowledged yet (ticks), and when we last heard from it.
    pub fn lag(&self, peer: NodeIx) -> (u64, Option<u64>) {
        let link = &self.links[usize::from(peer)];
        (self.tick.saturating_sub(link.acked), link.heard_ms)
    }

    /// A message from member `from` at `now_ms`.
    pub fn on_message(&mut self, now_ms: u64, from: NodeIx, msg: Message) -> Vec<Output> {
        if from == self.me() || usize::from(from) >= self.links.len() {
            return Vec::new();
        }
        self.links[usize::from(from)].heard_ms = Some(now_ms);
        let mut out = Vec::new();
        match msg {
            Message::Hello {
                node,
                session,
                digest,
                reply,
            } => self.on_hello(from, &node, session, digest, reply, &mut out),
            // Hello first: ask for it (it was lost, or we restarted since).
            _ if self.links[usize::from(from)].session.is_none() => {
                out.push(self.hello(from, true))
            }
            Message::Delta {
                session,
                from: start,
                upto,
                items,
            } => self.on_delta(from, session, start, upto, items, &mut out),
            Message::Ack { session, upto } => {
                let link = &mut self.links[usize::from(from)];
                if session == self.cfg.session && upto <= self.tick {
                    link.acked = link.acked.max(upto);
                }
            }
            // The driver looks the hash up in its journal and answers with `proof`.
            Message::Probe { seq } => self.event(SyncEvent::Probed { peer: from, seq }),
            Message::Proof { seq, hash } => {
                if let Err(alarm) = self.heads.check_proof(from, seq, hash) {
                    self.event(SyncEvent::AuditAlarm(alarm));
                }
            }
        }
        out
    }

    /// The answer to a probe ([`SyncEvent::Probed`]): this node's journal hash at `seq`,
    /// `None` when it no longer keeps it.
    pub fn proof(&self, to: NodeIx, seq: u64, hash: Option<[u8; 32]>) -> Output {
        Output::Send {
            to,
            msg: Message::Proof { seq, hash },
        }
    }

    fn on_hello(
        &mut self,
        from: NodeIx,
        node: &str,
        session: u64,
        digest: [u8; 32],
        reply: bool,
        out: &mut Vec<Output>,
    ) {
        let expected = self.cfg.members.name(from);
        let reason = if node != expected {
            Some(format!(
                "it says it is `{node}`, its certificate says `{expected}`"
            ))
        } else if digest != self.cfg.digest() {
            Some("its members or replicated pools differ from this node's config".to_owned())
        } else {
            None
        };
        if let Some(reason) = reason {
            self.event(SyncEvent::PeerRefused {
                peer: from,
                reason: reason.clone(),
            });
            out.push(Output::Close { to: from, reason });
            return;
        }
        let link = &mut self.links[usize::from(from)];
        let new = link.session != Some(session);
        if new {
            link.received_upto = 0;
        }
        // It may have lost what it acknowledged (a restart): send everything again.
        link.session = Some(session);
        link.acked = 0;
        link.sent = 0;
        if reply {
            out.push(self.hello(from, false));
        }
    }

    fn on_delta(
        &mut self,
        from: NodeIx,
        session: u64,
        start: u64,
        upto: u64,
        items: Vec<Item>,
        out: &mut Vec<Output>,
    ) {
        if self.links[usize::from(from)].session != Some(session) || start > upto {
            return;
        }
        for item in items {
            self.merge_item(from, item);
        }
        let link = &mut self.links[usize::from(from)];
        if start <= link.received_upto {
            link.received_upto = link.received_upto.max(upto);
        }
        out.push(Output::Send {
            to: from,
            msg: Message::Ack {
                session,
                upto: link.received_upto,
            },
        });
    }

    fn merge_item(&mut self, from: NodeIx, item: Item) {
        match item {
            Item::Escrow { pool, dim, state } => self.merge_escrow(from, &pool, &dim, &state),
            Item::Halts { agent, set } => match self.halts.merge_entry(&agent, set) {
                Ok(change) if change.is_empty() => {}
                Ok(change) => {
                    let clear = self.halts.epochs(&agent).is_empty();
                    self.touch(ItemKey::Halts(agent.clone()));
                    for epoch in change.added {
                        let agent = agent.clone();
                        self.event(SyncEvent::HaltAdded { agent, epoch });
                    }
                    if !change.cleared.is_empty() {
                        let epochs = change.cleared;
                        self.event(SyncEvent::HaltCleared {
                            agent,
                            epochs,
                            clear,
                        });
                    }
                }
                Err(e) => self.event(SyncEvent::PeerRefused {
                    peer: from,
                    reason: e.to_string(),
                }),
            },
            Item::Policy(reg) => {
                if self.policy.merge(reg) {
                    self.touch(ItemKey::Policy);
                    let values = self.policy.values();
                    match values.as_slice() {
                        [one] => self.event(SyncEvent::PolicyChanged(one.clone())),
                        _ => self.event(SyncEvent::PolicyConflict(values)),
                    }
                }
            }
            Item::Head { node, head } => {
                if usize::from(node) >= self.links.len() || node == self.me() {
                    return;
                }
                let merged = if node == from {
                    self.heads.claim(node, head)
                } else {
                    self.heads.merge(node, head)
                };
                match merged {
                    Ok(true) => self.touch(ItemKey::Head(node)),
                    Ok(false) => {}
                    Err(alarm) => self.event(SyncEvent::AuditAlarm(alarm)),
                }
            }
            Item::Agent { id, entry } => {
                if usize::from(entry.home) >= self.links.len() {
                    return;
                }
                match self.registry.merge(&id, entry) {
                    Ok(true) => self.touch(ItemKey::Agent(id)),
                    Ok(false) => {}
                    Err(conflict) => {
                        self.touch(ItemKey::Agent(id));
                        self.event(SyncEvent::RegistryConflict(conflict));
                    }
                }
            }
        }
    }

    /// Runs what is due at `now_ms`: the escrow work, probes, deltas and retransmissions.
    /// Call it at least every [`Timing::gossip_ms`].
    pub fn tick(&mut self, now_ms: u64) -> Vec<Output> {
        self.escrow_work(now_ms);
        let mut out: Vec<Output> = std::mem::take(&mut self.persist)
            .into_iter()
            .map(|(pool, dim)| Output::Persist {
                state: self.escrow[&(pool.clone(), dim.clone())].clone(),
                pool,
                dim,
            })
            .collect();
        if now_ms >= self.next_probe_ms {
            self.next_probe_ms = now_ms + self.cfg.timing.probe_ms;
            if let Some((node, seq)) = self.heads.probe(self.me()) {
                if self.is_up(node) {
                    out.push(Output::Send {
                        to: node,
                        msg: Message::Probe { seq },
                    });
                }
            }
        }
        let peers: Vec<NodeIx> = self.cfg.members.all().collect();
        for peer in peers {
            if peer != self.me() && self.is_up(peer) {
                self.deltas_for(peer, now_ms, &mut out);
            } else if peer != self.me() {
                self.hello_again(peer, now_ms, &mut out);
            }
        }
        out
    }

    /// A connected peer whose Hello has not come: ask again now and then (its Hello, or
    /// ours, was lost).
    fn hello_again(&mut self, peer: NodeIx, now_ms: u64, out: &mut Vec<Output>) {
        let retransmit = self.cfg.timing.retransmit_ms;
        let link = &mut self.links[usize::from(peer)];
        if link.connected && now_ms.saturating_sub(link.hello_at_ms) >= retransmit {
            link.hello_at_ms = now_ms;
            out.push(self.hello(peer, true));
        }
    }

    /// The deltas `peer` needs: what changed since we last sent, or, when an acknowledgement
    /// is overdue, everything since it last acknowledged.
    fn deltas_for(&mut self, peer: NodeIx, now_ms: u64, out: &mut Vec<Output>) {
        let retransmit = self.cfg.timing.retransmit_ms;
        let link = &mut self.links[usize::from(peer)];
        if link.acked < link.sent && now_ms.saturating_sub(link.sent_at_ms) >= retransmit {
            link.sent = link.acked;
        }
        let mut start = link.sent;
        if start >= self.tick {
            // Nothing new: an empty delta now and then is the heartbeat that keeps an heir
            // from taking an idle ward for a silent one.
            if now_ms.saturating_sub(link.sent_at_ms) >= retransmit {
                link.sent_at_ms = now_ms;
                out.push(Output::Send {
                    to: peer,
                    msg: Message::Delta {
                        session: self.cfg.session,
                        from: start,
                        upto: start,
                        items: Vec::new(),
                    },
                });
            }
            return;
        }
        link.sent_at_ms = now_ms;
        while start < self.tick {
            let mut items = Vec::new();
            let (mut bytes, mut upto) = (0, start);
            for (&t, key) in self.by_tick.range(start + 1..) {
                let Some(item) = self.item(key) else {
                    upto = t;
                    continue;
                };
                let size = item.size_hint();
                if !items.is_empty()
                    && (items.len() >= DELTA_ITEMS_MAX || bytes + size > DELTA_BYTES_BUDGET)
                {
                    break;
                }
                bytes += size;
                items.push(item);
                upto = t;
            }
            if upto == start || self.by_tick.range(upto + 1..).next().is_none() {
                upto = self.tick;
            }
            out.push(Output::Send {
                to: peer,
                msg: Message::Delta {
                    session: self.cfg.session,
                    from: start,
                    upto,
                    items,
                },
            });
            start = upto;
        }
        self.links[usize::from(peer)].sent = self.tick;
    }
}
