//! Admission of a proxied step: a new request is decided (an allow goes on; a request that
//! needs approval is parked for its retry, see [`super::parked`]), a retry naming its step
//! with `Warden-Step` is matched against the parked request. Every route of the proxy admits
//! through here and renders a refusal in its own API's shape.

use axum::http::{HeaderValue, StatusCode};
use warden_actors::{AgentState, Decision, Outcome, Step, StepId, StepStatus, Usage, Verdict};
use warden_supervisor::AgentHandle;

use super::parked::Fingerprint;
use crate::http::error::ApiError;
use crate::http::AppState;

/// Why a request is not forwarded.
pub enum Refused {
    /// The decision was not allow (deny, halt, or require_approval: parked, or still pending).
    Decision(Box<Decision>),
    /// The request itself is wrong (a bad or unknown retry, a node fault).
    Error(ApiError),
}

impl From<ApiError> for Refused {
    fn from(e: ApiError) -> Self {
        Refused::Error(e)
    }
}

impl From<warden_supervisor::AgentError> for Refused {
    fn from(e: warden_supervisor::AgentError) -> Self {
        Refused::Error(e.into())
    }
}

/// A request that may be forwarded: its step and the step's seal (only an outcome with the
/// seal settles it, so the agent cannot report its own bill; see
/// [`warden_actors::Step::sealed`]).
#[derive(Clone, Copy, Debug)]
pub struct Admitted {
    /// The step.
    pub step: StepId,
    /// Its seal.
    pub seal: u64,
}

/// A new unguessable seal: BLAKE3 keyed with a secret drawn once per process from the OS
/// (the time, hashed, if the OS has none), over a counter. The agent never sees a seal.
fn new_seal() -> u64 {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let key = KEY.get_or_init(|| {
        let mut k = [0u8; 32];
        if getrandom::fill(&mut k).is_err() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            k = *blake3::hash(&now.as_nanos().to_le_bytes()).as_bytes();
        }
        k
    });
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let h = blake3::keyed_hash(key, &n.to_le_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// Admits a request: the step under which it may be forwarded, or why not. `fp` gives the
/// request's fingerprint, asked for only when it is parked or retried; `retry` is the
/// request's `Warden-Step` header, if any.
pub async fn admit(
    state: &AppState,
    h: &AgentHandle,
    step: Step,
    fp: impl FnOnce() -> Fingerprint,
    retry: Option<&HeaderValue>,
) -> Result<Admitted, Refused> {
    match retry {
        Some(v) => retried(state, h, v, fp).await,
        None => decide(state, h, step, fp).await,
    }
}

/// Decides a new step. Only an allow goes on; the rest are answered here.
async fn decide(
    state: &AppState,
    h: &AgentHandle,
    step: Step,
    fp: impl FnOnce() -> Fingerprint,
) -> Result<Admitted, Refused> {
    let seal = new_seal();
    let d = h.step_here(&step.sealed(seal)).await?;
    match d.decision {
        Verdict::Allow => Ok(Admitted { step: d.step, seal }),
        Verdict::RequireApproval => {
            state
                .proxy
                .parked
                .insert(h.id().clone(), d.step, fp(), seal);
            Err(Refused::Decision(Box::new(d)))
        }
        Verdict::Deny | Verdict::Halt => Err(Refused::Decision(Box::new(d))),
    }
}

/// A retry of an approved request: forwarded under its step at most once, and only if it is
/// the very request that was parked.
async fn retried(
    state: &AppState,
    h: &AgentHandle,
    v: &HeaderValue,
    fp: impl FnOnce() -> Fingerprint,
) -> Result<Admitted, Refused> {
    let step: StepId = v
        .to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            ApiError::bad_request("bad_step_id", "Warden-Step is a step id such as s-12")
        })?;
    let agent = h.id();
    let unknown = || {
        ApiError::new(
            StatusCode::CONFLICT,
            "unknown_retry",
            format!("no request of yours parked as {step} is waiting for its retry (it was forwarded already, refused, or forgotten); send the request without Warden-Step"),
        )
    };
    let (expected, seal) = state.proxy.parked.get(agent, step).ok_or_else(unknown)?;
    if expected != fp() {
        return Err(Refused::Error(ApiError::new(
            StatusCode::CONFLICT,
            "retry_mismatch",
            format!("this request differs from the one parked as {step}; an approval covers only the request it was asked for"),
        )));
    }
    match h.step_status(step) {
        StepStatus::Pending { decision, .. } => Err(Refused::Decision(Box::new(decision))),
        StepStatus::Final(d) if d.decision == Verdict::Allow => {
            if !state.proxy.parked.remove(agent, step) {
                return Err(unknown().into());
            }
            if h.snapshot().state == AgentState::Halted {
                // Approved before the halt, but not yet run: it never runs.
                let nothing = Outcome::failure()
                    .with_usage(Usage::new().tokens(0).cost_micro_usd(0))
                    .with_seal(seal);
                let _ = h.outcome(step, nothing).await;
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "halted",
                    format!(
                        "agent {agent} is halted; the request approved as {step} is not forwarded"
                    ),
                )
                .into());
            }
            Ok(Admitted { step, seal })
        }
        StepStatus::Final(d) => {
            state.proxy.parked.remove(agent, step);
            Err(Refused::Decision(Box::new(d)))
        }
        StepStatus::NotKept | StepStatus::Unknown => {
            state.proxy.parked.remove(agent, step);
            Err(unknown().into())
        }
    }
}
