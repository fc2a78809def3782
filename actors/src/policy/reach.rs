//! What a policy could ever allow, for listings: the MCP gateway shows an agent only the tools
//! its policy can allow. Conservative in one direction only: a tool is hidden only when no step
//! of it could be allowed whatever its args and the agent's state; a tool shown may still be
//! refused when it is called (every call is decided).

use super::PolicySet;
use crate::decision::Verdict;

impl PolicySet {
    /// False when no step of `tool` could be allowed: the registry does not list it and the
    /// default decision is not allow, or a rule without conditions (no args, detectors,
    /// failures, steps, remaining budget, time or pool condition, no rate limit) denies or
    /// halts every step of it.
    pub fn may_allow(&self, tool: &str) -> bool {
        let tool = super::text::canonical(tool);
        let Some(info) = self.tools.get(&*tool) else {
            return self.doc.default_decision == Verdict::Allow;
        };
        let action = info.action;
        !self.candidates(&tool, action).iter().any(|&i| {
            let r = &self.rules[i as usize];
            matches!(r.verdict, Verdict::Deny | Verdict::Halt)
                && r.rate.is_none()
                && r.args.is_empty()
                && r.failures_at_least.is_none()
                && r.steps_at_least.is_none()
                && r.remaining_below.is_empty()
                && r.time.is_none()
                && r.teams.is_empty()
                && r.detectors.is_empty()
                && (r.actions_mask == 0 || r.actions_mask & (1 << action as u8) != 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_only_when_nothing_could_allow_it() {
        let p = PolicySet::parse(
            "version: 1\ntools:\n  a: {action: read}\n  b: {action: read}\n  c: {action: write}\n  d: {action: read}\nrules:\n  - {id: no-b, match: {tool: b}, decision: deny}\n  - {id: no-writes, match: {action: write}, decision: halt, kind: safety}\n  - {id: some-d, match: {tool: d, args: {x: {eq: 1}}}, decision: deny}\n",
        )
        .unwrap();
        assert!(p.may_allow("a"));
        assert!(!p.may_allow("b"), "a rule denies every call");
        assert!(!p.may_allow("c"), "its action class is halted");
        assert!(p.may_allow("d"), "only some calls are denied");
        assert!(!p.may_allow("unlisted"), "the default decision is deny");
    }
}
