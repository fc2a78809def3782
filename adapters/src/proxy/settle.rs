//! Settling a proxied step exactly once, whatever happens to its answer: [`Settlement`]
//! reports the outcome it holds when dropped (so a client that goes away, an upstream that
//! resets, or a panic in between still settles the step), and [`SettledBody`] carries it
//! along the answer's body, turning it into a failure if the body breaks. The upstream's
//! in-flight slot travels with the body too and is freed when the answer is done.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;
use warden_actors::{Outcome, StepId};
use warden_supervisor::AgentHandle;

use super::gate::Admitted;

/// A step to settle: reports its outcome, with the step's seal (the agent, who lacks it,
/// cannot report the step instead), when dropped.
pub struct Settlement {
    handle: AgentHandle,
    step: StepId,
    seal: u64,
    outcome: Option<Outcome>,
}

impl Settlement {
    /// A step that settles as a failure unless told otherwise (nothing was forwarded yet).
    pub fn new(handle: AgentHandle, admitted: Admitted) -> Self {
        Self {
            handle,
            step: admitted.step,
            seal: admitted.seal,
            outcome: Some(Outcome::failure().with_seal(admitted.seal)),
        }
    }

    /// What to report when dropped.
    pub fn set(&mut self, outcome: Outcome) {
        self.outcome = Some(outcome.with_seal(self.seal));
    }

    /// The outcome it will report.
    pub fn outcome_mut(&mut self) -> Option<&mut Outcome> {
        self.outcome.as_mut()
    }
}

impl Drop for Settlement {
    /// Settles on the dropping thread (the kernel under its lock, no hop to the agent's
    /// actor). The answer does not wait for the settlement's journal entry: a crash that
    /// loses it leaves the step open, and recovery settles an open proxied step at its
    /// whole reservation ([`super::orphans`]), never less.
    fn drop(&mut self) {
        let Some(outcome) = self.outcome.take() else {
            return;
        };
        if self.handle.outcome_inline(self.step, &outcome).is_err() {
            metrics::counter!("warden_proxy_settle_errors_total").increment(1);
        }
    }
}

/// Watches an answer's frames (the LLM proxy meters tokens this way).
pub trait FrameWatch: Send + 'static {
    /// Sees each data frame before it is passed on; may replace it.
    fn data(&mut self, bytes: Bytes, settlement: &mut Settlement) -> Bytes;
    /// The body ended cleanly.
    fn end(&mut self, settlement: &mut Settlement);
}

/// A tool's answer: nothing to meter, success as the status said.
pub struct PassThrough;

impl FrameWatch for PassThrough {
    fn data(&mut self, bytes: Bytes, _: &mut Settlement) -> Bytes {
        bytes
    }
    fn end(&mut self, _: &mut Settlement) {}
}

/// An answer's body on its way to the agent, settling its step when done.
pub struct SettledBody<B, W> {
    inner: B,
    watch: W,
    settlement: Option<Settlement>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl<B, W> SettledBody<B, W> {
    /// Wraps `inner`; `settlement` already holds the outcome for a clean end.
    pub fn new(
        inner: B,
        watch: W,
        settlement: Settlement,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Self {
        Self {
            inner,
            watch,
            settlement: Some(settlement),
            _slot: slot,
        }
    }
}

impl<B, W> Body for SettledBody<B, W>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
    W: FrameWatch + Unpin,
{
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(bytes) => {
                    let out = match this.settlement.as_mut() {
                        Some(s) => this.watch.data(bytes, s),
                        None => bytes,
                    };
                    Poll::Ready(Some(Ok(Frame::data(out))))
                }
                Err(other) => Poll::Ready(Some(Ok(other))),
            },
            Poll::Ready(Some(Err(e))) => {
                if let Some(mut s) = this.settlement.take() {
                    if let Some(o) = s.outcome_mut() {
                        o.status = warden_actors::OutcomeStatus::Failure;
                    }
                }
                Poll::Ready(Some(Err(std::io::Error::other(format!(
                    "the upstream's answer broke off: {e}"
                )))))
            }
            Poll::Ready(None) => {
                if let Some(mut s) = this.settlement.take() {
                    this.watch.end(&mut s);
                }
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
