//! Events: decisions, halts, resumes, restarts. Published on a bounded broadcast bus.
//!
//! The bus holds at most `capacity` events per subscriber; a subscriber that falls further
//! behind is told how many it missed ([`EventError::Lagged`]) and continues from the oldest
//! event still held. Publishing never blocks and costs one atomic load when nobody listens.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::decision::{DecisionEvent, HaltRecord};
use crate::ids::AgentId;

/// Default number of events a subscriber may fall behind before it starts losing them.
pub const DEFAULT_EVENT_CAPACITY: usize = 16_384;

/// Something that happened in a swarm.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A step was decided.
    Decision(DecisionEvent),
    /// An agent was halted.
    Halt {
        /// The agent.
        agent: AgentId,
        /// The halt.
        record: HaltRecord,
    },
    /// An operator lifted a halt.
    Resume {
        /// The agent.
        agent: AgentId,
        /// Who resumed it.
        by: String,
        /// The halt that was lifted.
        lifted: HaltRecord,
    },
    /// A step was parked until a human answers.
    ApprovalRequested {
        /// The agent.
        agent: AgentId,
        /// The approval id (`<agent>/<step>`).
        approval: String,
        /// The step's tool.
        tool: Arc<str>,
        /// The rule that asked.
        rule: Arc<str>,
        /// Its message.
        reason: String,
        /// When it is denied if nobody answers (Unix ms).
        expires_at_ms: u64,
    },
    /// A parked step got its final decision (approved, denied, timed out, or cancelled by a
    /// halt).
    ApprovalResolved {
        /// The agent.
        agent: AgentId,
        /// The approval id.
        approval: String,
        /// The final decision (allow or deny) with its reason.
        decision: crate::decision::Decision,
    },
    /// A crashed agent actor was restarted (its budgets and spend are untouched).
    Restart {
        /// The agent.
        agent: AgentId,
        /// The team whose strategy restarted it.
        team: String,
        /// Why (the crash message, or the sibling that crashed).
        reason: String,
    },
    /// A team exceeded its restart intensity and handed the failure to its parent.
    Escalation {
        /// The team that gave up.
        team: String,
        /// Why.
        reason: String,
    },
}

impl Event {
    /// The agent the event is about, if any.
    pub fn agent(&self) -> Option<&AgentId> {
        match self {
            Event::Decision(d) => Some(&d.agent),
            Event::Halt { agent, .. }
            | Event::ApprovalRequested { agent, .. }
            | Event::ApprovalResolved { agent, .. }
            | Event::Resume { agent, .. }
            | Event::Restart { agent, .. } => Some(agent),
            Event::Escalation { .. } => None,
        }
    }
}

/// The publishing side. Cheap to clone.
///
/// Two channels: every event, and every event but decisions (one per step: a subscriber that
/// only follows halts and the like never wakes for them, and with no subscriber of the first
/// kind decisions are not even built).
#[derive(Clone, Debug)]
pub struct EventBus {
    all: Channel,
    without_decisions: Channel,
}

/// One broadcast channel, its subscriber count and its count of events sent.
#[derive(Clone, Debug)]
struct Channel {
    tx: broadcast::Sender<Event>,
    subscribers: Arc<AtomicUsize>,
    /// Events sent so far (counted after each is on the channel).
    sent: Arc<AtomicU64>,
}

impl Channel {
    fn new(capacity: usize) -> Self {
        Self {
            tx: broadcast::channel(capacity.max(1)).0,
            subscribers: Arc::new(AtomicUsize::new(0)),
            sent: Arc::new(AtomicU64::new(0)),
        }
    }

    fn listened(&self) -> bool {
        self.subscribers.load(Ordering::Relaxed) > 0
    }

    fn send(&self, event: Event) {
        let _ = self.tx.send(event);
        self.sent.fetch_add(1, Ordering::Release);
    }

    fn subscribe(&self) -> EventStream {
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        let quiet_at = self.sent.load(Ordering::Acquire);
        EventStream {
            inner: tokio_stream::wrappers::BroadcastStream::new(self.tx.subscribe()),
            subscribers: Arc::clone(&self.subscribers),
            sent: Arc::clone(&self.sent),
            quiet_at,
        }
    }
}

impl EventBus {
    /// A bus holding up to `capacity` events per subscriber.
    pub fn new(capacity: usize) -> Self {
        Self {
            all: Channel::new(capacity),
            without_decisions: Channel::new(capacity),
        }
    }

    /// True when someone listens, to either channel.
    pub fn has_subscribers(&self) -> bool {
        self.all.listened() || self.without_decisions.listened()
    }

    /// True when someone takes every event, decisions included (publishers of
    /// [`Event::Decision`] skip building them otherwise).
    pub fn wants_decisions(&self) -> bool {
        self.all.listened()
    }

    /// Publishes; never blocks.
    pub fn publish(&self, event: Event) {
        if !matches!(event, Event::Decision(_)) && self.without_decisions.listened() {
            self.without_decisions.send(event.clone());
        }
        if self.all.listened() {
            self.all.send(event);
        }
    }

    /// A new subscription to every event, starting with the next one.
    pub fn subscribe(&self) -> EventStream {
        self.all.subscribe()
    }

    /// A new subscription to every event but decisions (halts, resumes, approvals,
    /// restarts, escalations), starting with the next one.
    pub fn subscribe_without_decisions(&self) -> EventStream {
        self.without_decisions.subscribe()
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(DEFAULT_EVENT_CAPACITY)
    }
}

impl Event {
    /// Every event's `type`, as in its JSON: what webhooks may subscribe to.
    pub const TYPES: [&'static str; 7] = [
        "decision",
        "halt",
        "resume",
        "approval_requested",
        "approval_resolved",
        "restart",
        "escalation",
    ];

    /// This event's `type`, as in its JSON (a test keeps the two in step).
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::Decision(_) => "decision",
            Event::Halt { .. } => "halt",
            Event::Resume { .. } => "resume",
            Event::ApprovalRequested { .. } => "approval_requested",
            Event::ApprovalResolved { .. } => "approval_resolved",
            Event::Restart { .. } => "restart",
            Event::Escalation { .. } => "escalation",
        }
    }
}

/// Why a subscription yielded no event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The subscriber fell more than the bus capacity behind and missed this many events.
    #[error("event subscriber fell behind and missed {0} events")]
    Lagged(u64),
}

/// A subscription: a [`futures_core::Stream`] of events.
pub struct EventStream {
    inner: tokio_stream::wrappers::BroadcastStream<Event>,
    subscribers: Arc<AtomicUsize>,
    /// Its channel's count of events sent, and its value when this stream last found
    /// nothing to read.
    sent: Arc<AtomicU64>,
    quiet_at: u64,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl EventStream {
    /// False when nothing was sent on this stream's channel since it last found nothing to
    /// read (so a poll would find nothing either: a poller on the publishing thread may skip
    /// it); true otherwise. Costs one atomic load, where a poll takes the channel's locks.
    pub fn may_have_events(&self) -> bool {
        self.sent.load(Ordering::Acquire) != self.quiet_at
    }

    /// The next event; `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<Result<Event, EventError>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl futures_core::Stream for EventStream {
    type Item = Result<Event, EventError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
        let sent = self.sent.load(Ordering::Acquire);
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(e))) => Poll::Ready(Some(Ok(e))),
            Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(n)))) => {
                Poll::Ready(Some(Err(EventError::Lagged(n))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                self.quiet_at = sent;
                Poll::Pending
            }
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{HaltKind, HaltRecord};

    #[test]
    fn type_names_are_the_json_types_and_all_listed() {
        let agent = AgentId::new("a").unwrap();
        let record = HaltRecord {
            kind: HaltKind::Safety,
            rule: None,
            reason: "r".into(),
            at_ms: 1,
            cause: Vec::new(),
        };
        let events = [
            Event::Halt {
                agent: agent.clone(),
                record: record.clone(),
            },
            Event::Resume {
                agent: agent.clone(),
                by: "op".into(),
                lifted: record,
            },
            Event::ApprovalRequested {
                agent: agent.clone(),
                approval: "a/s-1".into(),
                tool: Arc::from("t"),
                rule: Arc::from("r"),
                reason: "why".into(),
                expires_at_ms: 2,
            },
            Event::Restart {
                agent,
                team: "swarm".into(),
                reason: "crash".into(),
            },
            Event::Escalation {
                team: "swarm".into(),
                reason: "too many".into(),
            },
        ];
        for e in &events {
            let json = serde_json::to_value(e).unwrap();
            assert_eq!(json["type"], e.type_name());
            assert!(Event::TYPES.contains(&e.type_name()));
        }
        let mut names = Event::TYPES.to_vec();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Event::TYPES.len());
    }

    fn halt(agent: &AgentId) -> Event {
        Event::Halt {
            agent: agent.clone(),
            record: HaltRecord {
                kind: HaltKind::Safety,
                rule: None,
                reason: "r".into(),
                at_ms: 1,
                cause: Vec::new(),
            },
        }
    }

    fn decision(agent: &AgentId) -> Event {
        Event::Decision(crate::decision::DecisionEvent {
            agent: agent.clone(),
            tool: Arc::from("t"),
            decision: crate::decision::Decision {
                decision: crate::decision::Verdict::Allow,
                rule: None,
                kind: None,
                reason: String::new(),
                step: crate::ids::StepId::from_seq(1),
                approval: None,
                remaining: Default::default(),
                audit_seq: None,
            },
        })
    }

    fn next_now(s: &mut EventStream) -> Option<Event> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Pin::new(s).poll_next(&mut cx) {
            Poll::Ready(Some(Ok(e))) => Some(e),
            _ => None,
        }
    }

    #[test]
    fn a_subscriber_without_decisions_gets_the_rest_and_asks_for_no_decisions() {
        let bus = EventBus::new(16);
        let a = AgentId::new("a").unwrap();
        let mut quiet = bus.subscribe_without_decisions();
        assert!(bus.has_subscribers());
        assert!(!bus.wants_decisions());
        let mut all = bus.subscribe();
        assert!(bus.wants_decisions());
        bus.publish(decision(&a));
        bus.publish(halt(&a));
        assert_eq!(next_now(&mut all).map(|e| e.type_name()), Some("decision"));
        assert_eq!(next_now(&mut all).map(|e| e.type_name()), Some("halt"));
        assert!(quiet.may_have_events());
        assert_eq!(next_now(&mut quiet).map(|e| e.type_name()), Some("halt"));
        assert_eq!(next_now(&mut quiet), None);
        assert!(!quiet.may_have_events());
        bus.publish(halt(&a));
        assert!(quiet.may_have_events());
        assert_eq!(next_now(&mut quiet).map(|e| e.type_name()), Some("halt"));
        assert_eq!(next_now(&mut quiet), None);
        assert!(!quiet.may_have_events());
        drop(all);
        assert!(!bus.wants_decisions());
        drop(quiet);
        assert!(!bus.has_subscribers());
    }
}
