"""Fixtures: a real `warden node` (from $WARDEN_BIN) on a free port with a policy and a
config written here, fresh agents on it, and a scripted OpenAI/Anthropic-compatible model
server that is the node's LLM upstream: the frameworks' model calls go through the node's LLM
proxy (`llm_base_url`), which meters, judges and forwards them to the fake. For the MCP
gateway, a second node (`mcp_node`) fronts a real MCP server (`files_server`, the `mcp` SDK's
MCPServer) as its upstream `files`.

No mock of warden: every test talks to the real node over HTTP.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

# Never export traces of the Agents SDK from tests (read once, when tracing is first used).
os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"

from warden_client import ActionClass, AsyncWardenClient, WardenClient  # noqa: E402

from .fake_llm import FakeLLM  # noqa: E402
from .mcp_upstream import FilesServer  # noqa: E402

OPERATOR_TOKEN = "python-tests-operator-token"
UPSTREAM_KEY = "sk-fake-upstream-key-3f9c"
"""The provider key the node holds (from its environment) and adds to what it forwards."""
START_DEADLINE_S = 20.0
"""How long the node gets to print its address and report ready."""

POLICY = """\
version: 1
defaults:
  budgets: {steps: 100, tokens: 1000000, cost_usd: 5.00}
  approval_timeout: 2m
pools:
  - {path: swarm, limits: {cost_usd: 1000}}
tools:
  openai: {action: network, upstream: openai}
  anthropic: {action: network, upstream: anthropic}
  lookup: {action: read, args: [query], min_cost: {tokens: 0, cost_usd: 0}}
  transfer: {action: spend, args: [amount, to]}
  shell: {action: execute, args: [command]}
  delete_database: {action: write, args: [name]}
  payments.transfer: {action: spend, args: [amount, to]}
  flaky: {action: execute, args: [fail]}
rules:
  - {id: no-rm-rf, match: {tool: shell, args: {command: {command: {program: rm, flags: [recursive, force]}}}}, decision: halt, kind: safety}
  - {id: no-db-delete, match: {tool: delete_database}, decision: deny}
  - {id: big-transfer, match: {tool: payments.transfer, args: {amount: {gt: 1000}}}, decision: require_approval}
"""

ACTIONS: dict[str, ActionClass] = {
    "lookup": "read",
    "shell": "execute",
    "delete_database": "write",
    "payments.transfer": "spend",
    "flaky": "execute",
    "transfer": "spend",
}
"""The action class of each tool of POLICY, as the clients claim them."""


PRICE_INPUT_USD_PER_MTOK = 1.0
PRICE_OUTPUT_USD_PER_MTOK = 2.0
MAX_OUTPUT_TOKENS = 1000

CONFIG = """\
# The node's LLM proxy: the fake model server is both provider upstreams; the node adds the
# provider key (from its environment) to what it forwards.
upstreams:
  openai: {{url: "{llm}/v1", kind: openai, headers: {{authorization: "Bearer env:WARDEN_TEST_UPSTREAM_KEY"}}}}
  anthropic: {{url: "{llm}/v1", kind: anthropic, headers: {{x-api-key: "env:WARDEN_TEST_UPSTREAM_KEY"}}}}
prices:
  fake-model: {{upstream: openai, input: {input}, output: {output}, max_output_tokens: {max_out}}}
  fake-claude: {{upstream: anthropic, input: {input}, output: {output}, max_output_tokens: {max_out}}}
"""
"""The node's config: per model, its upstream, its price in USD per million input and output
tokens, and the most output tokens a request may ask for."""


def spend_micro_usd(input_tokens: int, output_tokens: int) -> int:
    """What the node charges for this usage at CONFIG's prices, in micro-USD."""
    return round(
        input_tokens * PRICE_INPUT_USD_PER_MTOK + output_tokens * PRICE_OUTPUT_USD_PER_MTOK
    )


@dataclass(frozen=True)
class Node:
    base_url: str
    operator_token: str
    log: Path


def warden_binary() -> str:
    """$WARDEN_BIN, else a `warden` on PATH, else the workspace's debug build."""
    explicit = os.environ.get("WARDEN_BIN")
    if explicit:
        return explicit
    on_path = shutil.which("warden")
    if on_path:
        return on_path
    root = Path(__file__).resolve().parents[3]
    target = Path(os.environ.get("CARGO_TARGET_DIR", root / "target"))
    built = target / "debug" / "warden"
    if built.exists():
        return str(built)
    pytest.fail(
        "no warden binary: set WARDEN_BIN=/path/to/warden (cargo build; then "
        "WARDEN_BIN=$CARGO_TARGET_DIR/debug/warden), or run `cargo test --test python`",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def llm_server() -> Iterator[FakeLLM]:
    """The scripted model server, for the whole session (it is the node's upstream)."""
    server = FakeLLM()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory, llm_server: FakeLLM) -> Iterator[Node]:
    """A `warden node` on 127.0.0.1 with a free port, a temp data dir, POLICY and CONFIG
    (its LLM proxy forwarding to the fake model server)."""
    with run_node(
        tmp_path_factory.mktemp("warden-node"), POLICY, llm_config(llm_server)
    ) as started:
        yield started


def llm_config(llm_server: FakeLLM) -> str:
    """CONFIG for the fake model server."""
    return CONFIG.format(
        llm=llm_server.base_url,
        input=PRICE_INPUT_USD_PER_MTOK,
        output=PRICE_OUTPUT_USD_PER_MTOK,
        max_out=MAX_OUTPUT_TOKENS,
    )


@contextmanager
def run_node(work: Path, policy_yaml: str, config_yaml: str) -> Iterator[Node]:
    """Runs `warden node` in `work` with this policy and config until the block ends."""
    policy = work / "policy.yaml"
    policy.write_text(policy_yaml)
    config = work / "config.yaml"
    config.write_text(config_yaml)
    log = work / "node.log"
    env = {
        **os.environ,
        "WARDEN_OPERATOR_TOKEN": OPERATOR_TOKEN,
        "WARDEN_TEST_UPSTREAM_KEY": UPSTREAM_KEY,
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                warden_binary(),
                "node",
                "--config",
                str(config),
                "--data",
                str(work / "data"),
                "--listen",
                "127.0.0.1:0",
                "--policy",
                str(policy),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        base_url = _wait_ready(proc, log)
        yield Node(base_url, OPERATOR_TOKEN, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(proc: subprocess.Popen[bytes], log: Path) -> str:
    """The node's base URL once it printed it and /readyz answers 200; fails with the
    node's log otherwise, within START_DEADLINE_S."""
    deadline = time.monotonic() + START_DEADLINE_S
    base_url = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"warden node exited with {proc.returncode}:\n{log.read_text()}")
        if base_url is None:
            found = re.search(r"listening on (http://\S+)", log.read_text())
            base_url = found.group(1) if found else None
        if base_url is not None:
            try:
                if httpx.get(f"{base_url}/readyz", timeout=1.0).status_code == 200:
                    return base_url
            except httpx.HTTPError:
                pass
        time.sleep(0.02)
    pytest.fail(f"warden node not ready within {START_DEADLINE_S} s:\n{log.read_text()}")


@pytest.fixture(scope="session")
def operator(node: Node) -> Iterator[WardenClient]:
    with WardenClient(node.base_url, node.operator_token, actions=ACTIONS) as client:
        yield client


def wait_until(what: str, ok: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not ok():
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} within {timeout_s} s")
        time.sleep(0.02)


def settled(operator: WardenClient, agent_id: str) -> dict[str, Any]:
    """The agent's record once no step is open. The proxy settles a call just after it
    answered (a stream, after its last event), so a record read at once may still show it."""
    wait_until("settled", lambda: operator.get_agent(agent_id).raw["open_steps"] == 0)
    return dict(operator.get_agent(agent_id).raw)


def new_agent_id(prefix: str = "py") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def agent(operator: WardenClient) -> Iterator[WardenClient]:
    """A freshly registered agent of the pool `swarm`, with its own token."""
    with operator.as_agent(operator.register_agent(new_agent_id(), pool="swarm")) as client:
        yield client


@pytest.fixture
async def aagent(node: Node, operator: WardenClient) -> AsyncIterator[AsyncWardenClient]:
    """A freshly registered agent, through the async client."""
    registered = operator.register_agent(new_agent_id("pya"), pool="swarm")
    async with AsyncWardenClient(node.base_url, node.operator_token, actions=ACTIONS) as op:
        async with op.as_agent(registered) as client:
            yield client


@pytest.fixture
def fake_llm(llm_server: FakeLLM) -> Iterator[FakeLLM]:
    """The scripted model server, with nothing queued or recorded from earlier tests."""
    llm_server.reset()
    yield llm_server
    llm_server.reset()


@pytest.fixture
def llm_base_url(node: Node, fake_llm: FakeLLM) -> str:
    """Where the frameworks send model calls (the OpenAI SDK's base URL, ending in /v1): the
    node's LLM proxy (POST /v1/chat/completions, /v1/responses, /v1/messages), which forwards
    to the fake model server as its `openai` and `anthropic` upstreams."""
    return f"{node.base_url}/v1"


MCP_POLICY = """\
version: 1
defaults:
  budgets: {steps: 1000, tokens: 1000000, cost_usd: 5.00}
pools:
  - {path: swarm}
tools:
  openai: {action: network, upstream: openai}
  # The gateway's steps: upstream `files`' tool `t`, listed as `files__t`, is the step
  # `mcp.files.t`, whether the gateway is called or the LLM proxy judges a model's proposal.
  # Their results are judged under the same name with args {result: <text>}.
  mcp.files.read_file: {action: read, args: [path]}
  mcp.files.delete_file: {action: write}
  mcp.files.write_file: {action: write, args: [path, text]}
rules:
  - {id: no-deletes, match: {tool: mcp.files.delete_file}, decision: deny}
  - {id: no-etc, match: {tool: mcp.files.read_file, args: {path: {regex: '^/etc'}}}, decision: deny}
  - {id: no-injection, match: {detector: prompt_injection}, decision: deny}
"""
"""The MCP node's policy: `read_file` allowed but for /etc, `delete_file` never (so it is
never listed), `write_file` allowed, results carrying a prompt injection refused."""


@pytest.fixture(scope="session")
def files_server() -> Iterator[FilesServer]:
    """The real MCP server (the `mcp` SDK's MCPServer), for the whole session."""
    server = FilesServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def files(files_server: FilesServer) -> FilesServer:
    """The MCP server with no calls recorded from earlier tests."""
    files_server.reset()
    return files_server


@pytest.fixture(scope="session")
def mcp_node(
    tmp_path_factory: pytest.TempPathFactory, files_server: FilesServer, llm_server: FakeLLM
) -> Iterator[Node]:
    """A `warden node` whose MCP gateway (`POST /mcp`) fronts `files_server` as the upstream
    `files` (and whose LLM proxy forwards to the fake model server), with MCP_POLICY."""
    files = f'  files: {{url: "{files_server.url}", kind: mcp}}\n'
    config = llm_config(llm_server).replace("\nprices:", f"\n{files}prices:", 1)
    with run_node(tmp_path_factory.mktemp("warden-mcp-node"), MCP_POLICY, config) as started:
        yield started
