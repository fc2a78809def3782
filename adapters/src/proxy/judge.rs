//! Tool calls a model proposes, judged before the agent receives them. Each proposal is
//! decided as a step of the agent (tool = the function's name, or `mcp.<server>.<tool>` for a
//! tool the MCP gateway lists as `<server>__<tool>`; action, risk and minimum cost
//! from the registry, `execute` for a tool the registry lacks, whose default decision then
//! applies; args = the call's arguments), so it is journaled, counts towards the agent's
//! steps, its rate limits and its stagnation window, and a safety rule can halt the agent
//! right there. Nothing has run yet, so an allowed proposal settles at once with nothing
//! used; running the tool later is its own step. A proposal that needs approval is refused
//! (the agent cannot receive half an answer); its parked step settles with nothing used if
//! it is approved later, so no reservation is left open.

use serde_json::{json, Value};
use warden_actors::{ActionClass, Decision, Outcome, Step, Usage, Verdict};
use warden_supervisor::AgentHandle;

use crate::http::AppState;

/// One tool call a model proposed.
#[derive(Clone, Debug)]
pub struct Proposal {
    /// The function's name.
    pub name: String,
    /// Its arguments as the model sent them: a JSON object, or the JSON text of one.
    pub arguments: Value,
}

/// Why a proposal is not passed on.
#[derive(Clone, Debug)]
pub struct Forbidden {
    /// The function's name.
    pub name: String,
    /// The decision (none when the call could not even be read as a step).
    pub decision: Option<Decision>,
    /// A sentence for the agent's framework to show.
    pub message: String,
}

/// Judges every proposal; the first one not allowed is returned (the others are still
/// decided, so each is journaled).
pub async fn judge(state: &AppState, h: &AgentHandle, calls: &[Proposal]) -> Option<Forbidden> {
    let mut first = None;
    for call in calls {
        if let Some(f) = judge_one(state, h, call).await {
            first.get_or_insert(f);
        }
    }
    first
}

async fn judge_one(state: &AppState, h: &AgentHandle, call: &Proposal) -> Option<Forbidden> {
    let refuse = |decision: Option<Decision>, message: String| {
        Some(Forbidden {
            name: call.name.clone(),
            decision,
            message,
        })
    };
    let args = match &call.arguments {
        Value::Object(_) => call.arguments.clone(),
        Value::String(text) => match warden_actors::step::parse_unique_json(text) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return refuse(None, format!("warden: the model's call to `{}` has arguments that are not one JSON object; it was not passed on", call.name));
            }
        },
        _ => return refuse(None, format!("warden: the model's call to `{}` has arguments that are not a JSON object; it was not passed on", call.name)),
    };
    // A tool of the MCP gateway (`files__read_file`) is judged under its gateway name
    // (`mcp.files.read_file`): one policy name per tool, whichever way it is called.
    let tool = state.proxy.step_tool(&call.name);
    let action = state
        .proxy
        .tool_action(&tool)
        .unwrap_or(ActionClass::Execute);
    let step: Step =
        match serde_json::from_value(json!({"tool": tool, "action": action, "args": args})) {
            Ok(s) => s,
            Err(e) => {
                return refuse(
                    None,
                    format!(
                "warden: the model's call to `{}` is not a valid step ({e}); it was not passed on",
                call.name
            ),
                )
            }
        };
    let d = match h.step_here(&step).await {
        Ok(d) => d,
        Err(e) => {
            return refuse(
                None,
                format!(
                    "warden: the model's call to `{}` could not be decided ({e})",
                    call.name
                ),
            )
        }
    };
    let nothing = || Outcome::success().with_usage(Usage::new().tokens(0).cost_micro_usd(0));
    match d.decision {
        Verdict::Allow => {
            let _ = h.outcome_inline(d.step, &nothing());
            None
        }
        Verdict::RequireApproval => {
            let (h2, parked) = (h.clone(), d.clone());
            tokio::spawn(async move {
                if let Ok(fin) = h2.await_approval(&parked).await {
                    if fin.decision == Verdict::Allow {
                        let _ = h2.outcome(fin.step, nothing()).await;
                    }
                }
            });
            let message = format!(
                "warden: the model's call to `{}` needs approval ({}): {}",
                call.name,
                d.approval.as_deref().unwrap_or("?"),
                d.reason
            );
            refuse(Some(d), message)
        }
        Verdict::Deny | Verdict::Halt => {
            let message = format!(
                "warden: the model's call to `{}` was {} by rule {}: {}",
                call.name,
                if d.decision == Verdict::Halt {
                    "halted"
                } else {
                    "denied"
                },
                d.rule.as_deref().unwrap_or("(none)"),
                d.reason
            );
            refuse(Some(d), message)
        }
    }
}
