"""Python client of warden, the supervisor that governs AI agents.

Before every step (a tool call, a payment, a shell command) an agent asks its warden node,
which answers allow, deny, require_approval or halt by policy and reserves the step's cost;
after the step the agent reports what it really used.

```python
from warden_client import WardenClient, StepDenied

op = WardenClient("http://127.0.0.1:7700", operator_token)
agent = op.as_agent(op.register_agent("coder-1", pool="swarm"))
try:
    with agent.governed("shell", "execute", args={"command": "ls"}) as step:
        run("ls")
        step.report(tokens=0, cost_usd=0.0)
except StepDenied as e:
    print(e.decision.rule, e.decision.reason)
```

Framework integrations live in `warden_client.langchain` (LangChain 1.x middleware and a
callback handler) and `warden_client.openai_agents` (OpenAI Agents SDK tool guardrails);
`openai_client` and `anthropic_client` point the provider SDKs at the node's LLM proxy;
`connect_mcp` (or `mcp_url` and `mcp_headers`) an MCP client at the node's MCP gateway.
"""

from ._async import AsyncWardenClient
from ._governed import AsyncGoverned, Governed
from ._llm import (
    anthropic_client,
    async_anthropic_client,
    async_openai_client,
    openai_client,
    proxy_base_url,
)
from ._mcp import MCP_REFUSALS, MCP_UPSTREAM_FAILED, connect_mcp, mcp_headers, mcp_refusal, mcp_url
from ._sync import WardenClient
from ._types import (
    ActionClass,
    Agent,
    AgentHalted,
    ApprovalRequired,
    ApprovalTimeout,
    Cost,
    Decision,
    DecisionKind,
    OutcomeResult,
    Signals,
    StepDenied,
    WardenError,
)

__all__ = [
    "MCP_REFUSALS",
    "MCP_UPSTREAM_FAILED",
    "ActionClass",
    "Agent",
    "AgentHalted",
    "ApprovalRequired",
    "ApprovalTimeout",
    "AsyncGoverned",
    "AsyncWardenClient",
    "Cost",
    "Decision",
    "DecisionKind",
    "Governed",
    "OutcomeResult",
    "Signals",
    "StepDenied",
    "WardenClient",
    "WardenError",
    "anthropic_client",
    "async_anthropic_client",
    "async_openai_client",
    "connect_mcp",
    "mcp_headers",
    "mcp_refusal",
    "mcp_url",
    "openai_client",
    "proxy_base_url",
]
__version__ = "0.1.0"
