//! Admission of a proxied step: a new request is decided (an allow goes on; a request that
//! needs approval is parked for its retry, see [`super::parked`]), a retry naming its step
//! with `Warden-Step` is matched against the parked request. Every route of the proxy admits
//! through here and renders a refusal in its own API's shape.

use axum::http::{HeaderValue, StatusCode};
use warden_actors::{Decision, Step, StepId, StepStatus, Verdict};
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

/// Admits a request: the step under which it may be forwarded, or why not. `retry` is the
/// request's `Warden-Step` header, if any.
pub async fn admit(
    state: &AppState,
    h: &AgentHandle,
    step: Step,
    fp: Fingerprint,
    retry: Option<&HeaderValue>,
) -> Result<StepId, Refused> {
    match retry {
        Some(v) => retried(state, h, v, fp),
        None => decide(state, h, step, fp).await,
    }
}

/// Decides a new step. Only an allow goes on; the rest are answered here.
async fn decide(
    state: &AppState,
    h: &AgentHandle,
    step: Step,
    fp: Fingerprint,
) -> Result<StepId, Refused> {
    let d = h.step(step).await?;
    match d.decision {
        Verdict::Allow => Ok(d.step),
        Verdict::RequireApproval => {
            state.proxy.parked.insert(h.id().clone(), d.step, fp);
            state.proxy.owned.insert(h.id().clone(), d.step);
            Err(Refused::Decision(Box::new(d)))
        }
        Verdict::Deny | Verdict::Halt => Err(Refused::Decision(Box::new(d))),
    }
}

/// A retry of an approved request: forwarded under its step at most once, and only if it is
/// the very request that was parked.
fn retried(
    state: &AppState,
    h: &AgentHandle,
    v: &HeaderValue,
    fp: Fingerprint,
) -> Result<StepId, Refused> {
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
    let expected = state.proxy.parked.get(agent, step).ok_or_else(unknown)?;
    if expected != fp {
        return Err(Refused::Error(ApiError::new(
            StatusCode::CONFLICT,
            "retry_mismatch",
            format!("this request differs from the one parked as {step}; an approval covers only the request it was asked for"),
        )));
    }
    match h.step_status(step) {
        StepStatus::Pending { decision, .. } => Err(Refused::Decision(Box::new(decision))),
        StepStatus::Final(d) if d.decision == Verdict::Allow => {
            if state.proxy.parked.remove(agent, step) {
                Ok(step)
            } else {
                Err(unknown().into())
            }
        }
        StepStatus::Final(d) => {
            state.proxy.parked.remove(agent, step);
            state.proxy.owned.remove(agent, step);
            Err(Refused::Decision(Box::new(d)))
        }
        StepStatus::NotKept | StepStatus::Unknown => {
            state.proxy.parked.remove(agent, step);
            state.proxy.owned.remove(agent, step);
            Err(unknown().into())
        }
    }
}
