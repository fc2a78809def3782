#!/usr/bin/env python3
"""Anchor measurements: per-decision latency of two Python agent-governance libraries.

These numbers sit next to warden's own decision-latency benches (benches/decisions.rs)
as outside reference points. Single thread, in-process, no I/O; nothing here touches warden.

emocore 0.7.0 -- "one governed step"
    API: ``emocore.step(agent, emocore.Signals(reward=0.5, novelty=0.1, urgency=0.2))``
    on one long-lived ``emocore.EmoCoreAgent``. One call runs EmoEngine.step (appraisal ->
    pressure integration -> GovernanceEngine.compute, a 5x4 numpy mat-vec -> budget inertia ->
    mode -> ordered halt checks: exploration/risk/exhaustion/stagnation/max_steps), then
    dataclasses.asdict() of the pressure state and GuaranteeEnforcer.enforce() (budget clamp).
    It returns a StepResult (budget, halted, failure, mode).
    Profile: BALANCED with max_steps raised to 10**12. The stock BALANCED profile halts at step
    100 (max_steps=100), and a halted engine answers on an early-return path without doing any
    of the work above, so without this change we would time the halted path, not a step.
    With constant signals the budget settles (effort=1, persistence=1, risk=0, exploration=0)
    and never halts; the script checks this after each loop.

agent-governance-toolkit-core 5.0.0 (Microsoft AGT) -- "one request against 100 rules"
    API: ``agent_os.policies.PolicyEvaluator([doc]).evaluate({"tool_name": ..., "agent_id": ...})``,
    the path AGT's own docs/BENCHMARKS.md measures. One call flattens and priority-sorts the
    rules, tests each rule's PolicyCondition until the first match, then deep-copies the
    context into an audit entry with a UTC timestamp and returns a pydantic PolicyDecision.
    Policy (one PolicyDocument, default action DENY): 100 PolicyRules on field "tool_name",
    operator EQ.
      * rules 0..98: tool_name == "tool_<i>", DENY if i % 3 == 0 else ALLOW, priority 100-i
        (priorities 100..2). None of them matches the "full scan" request below.
      * rule 99 ("allow-read-file"): tool_name == "read_file", ALLOW, priority 1 (the lowest).
    Rows:
      * "full scan": request tool_name="read_file". The only matching rule is checked last,
        so all 100 conditions are evaluated (worst case for first-match evaluation).
      * "first rule": request tool_name="tool_0", which matches the highest-priority rule.
        This is the shape of AGT's own bench_policy.py 100-rule case (its matching rule also
        has the top priority), so this row can be set against AGT's published figure.

Method, per row: warm up (2,000 calls); time N single calls, each with its own pair of
time.perf_counter_ns() reads (p50/p99 by nearest rank, in µs); then time a separate tight
loop of N calls to get calls/s. The GC stays on. An "empty call" row (a no-op lambda through
the same harness) shows how much of each figure the harness itself adds.

Usage:  python3 benches/anchors/anchors.py [--samples N]
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata as md
import math
import os
import platform
import sys
import time
import warnings

# distribution name -> (import name, install command)
REQUIRED = {
    "emocore": ("emocore", "pip install emocore==0.7.0"),
    "agent-governance-toolkit-core": ("agent_os.policies",
                                      "pip install agent-governance-toolkit-core==5.0.0"),
}
WARMUP = 2_000


def import_or_exit():
    """Import both libraries, or name each missing package and how to install it, then exit."""
    missing = []
    for dist, (module, cmd) in REQUIRED.items():
        try:
            with warnings.catch_warnings():  # AGT's compatibility shims warn at import time
                warnings.simplefilter("ignore", DeprecationWarning)
                __import__(module)
        except ImportError as exc:
            missing.append(f"  - package '{dist}' (import {module}) is not importable: {exc}\n"
                           f"    install it with:  {cmd}")
    if missing:
        sys.exit("anchors.py: missing Python package(s):\n" + "\n".join(missing)
                 + f"\n(interpreter: {sys.executable})")


# ----------------------------------------------------------------------------- harness
def pct(sorted_ns, p):
    """Nearest-rank percentile of a sorted list of nanosecond samples, in µs."""
    return sorted_ns[max(0, math.ceil(p / 100 * len(sorted_ns)) - 1)] / 1_000


def measure(fn, n):
    """Warm up, time n calls one by one, then time a tight loop of n calls."""
    for _ in range(WARMUP):
        fn()
    clock = time.perf_counter_ns
    samples = [0] * n
    for i in range(n):
        t0 = clock()
        fn()
        samples[i] = clock() - t0
    samples.sort()
    t0 = clock()
    for _ in range(n):
        fn()
    elapsed_ns = clock() - t0
    return pct(samples, 50), pct(samples, 99), n * 1e9 / elapsed_ns


# ----------------------------------------------------------------------------- emocore
def emocore_step():
    """Return a zero-argument callable doing one emocore governed step, plus a check."""
    import emocore
    from emocore.profiles import PROFILES, ProfileType

    # Stock BALANCED halts at step 100; lift only that fuse so every call is a real step.
    profile = dataclasses.replace(PROFILES[ProfileType.BALANCED], max_steps=10**12)
    agent = emocore.EmoCoreAgent(profile)
    signals = emocore.Signals(reward=0.5, novelty=0.1, urgency=0.2)
    step = emocore.step

    def call():
        return step(agent, signals)

    def check():  # one more step: the engine must still be live, not halted
        r = call()
        if r.halted:
            sys.exit(f"emocore halted ({r.failure}, {r.reason}): timings would be of the halted path")
        return f"last step: halted={r.halted} mode={r.mode.name} budget={r.budget}"

    return call, check


# ----------------------------------------------------------------------------- AGT
def agt_policy():
    """Build the 100-rule PolicyDocument described in the module docstring."""
    from agent_os.policies import (PolicyAction, PolicyCondition, PolicyDefaults,
                                   PolicyDocument, PolicyOperator, PolicyRule)

    rules = [
        PolicyRule(
            name=f"rule-{i}",
            condition=PolicyCondition(field="tool_name", operator=PolicyOperator.EQ,
                                      value=f"tool_{i}"),
            action=PolicyAction.DENY if i % 3 == 0 else PolicyAction.ALLOW,
            priority=100 - i,
        )
        for i in range(99)
    ]
    rules.append(PolicyRule(
        name="allow-read-file",
        condition=PolicyCondition(field="tool_name", operator=PolicyOperator.EQ,
                                  value="read_file"),
        action=PolicyAction.ALLOW,
        priority=1,
    ))
    return PolicyDocument(name="anchor-100-rules", rules=rules,
                          defaults=PolicyDefaults(action=PolicyAction.DENY))


def agt_evaluate(tool_name, expect_rule, expect_allowed):
    """Return a callable evaluating one request against the 100-rule policy, plus a check."""
    from agent_os.policies import PolicyEvaluator

    evaluator = PolicyEvaluator(policies=[agt_policy()])
    context = {"tool_name": tool_name, "agent_id": "agent-1"}
    evaluate = evaluator.evaluate

    def call():
        return evaluate(context)

    def check():  # the decision must come from the rule we meant to hit
        d = call()
        if d.matched_rule != expect_rule or d.allowed != expect_allowed:
            sys.exit(f"AGT decided {d.matched_rule!r}/{d.action}, expected {expect_rule!r}")
        return f"decision: allowed={d.allowed} action={d.action} matched_rule={d.matched_rule}"

    return call, check


# ----------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=50_000,
                    help="timed single calls per row, and calls in the throughput loop")
    args = ap.parse_args()
    if args.samples < 100:
        ap.error("--samples must be at least 100")
    import_or_exit()

    import numpy  # emocore's governance maths runs on numpy
    import pydantic  # AGT's policy and decision models are pydantic models

    print("# warden anchor measurements (Python governance libraries)\n")
    print(f"- python {platform.python_version()} ({sys.executable}), {platform.machine()}, "
          f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}")
    for dist in ("emocore", "agent-governance-toolkit-core", "numpy", "pydantic"):
        print(f"- {dist} {md.version(dist)}")
    print(f"- warm-up {WARMUP} calls, {args.samples} timed calls, {args.samples} "
          "calls in the throughput loop; one thread, GC on\n")

    agt_v = md.version("agent-governance-toolkit-core")
    rows = [
        ("empty call (harness overhead)", "no-op lambda", lambda: None, lambda: "harness only"),
        (f"emocore {md.version('emocore')}",
         "`emocore.step(agent, Signals(...))`: one governed step (budgets + halt checks)",
         *emocore_step()),
        (f"AGT core {agt_v}, full scan",
         "`PolicyEvaluator.evaluate(ctx)`, 100 rules, match is the last rule checked",
         *agt_evaluate("read_file", "allow-read-file", True)),
        (f"AGT core {agt_v}, first rule",
         "`PolicyEvaluator.evaluate(ctx)`, 100 rules, match is the first rule checked",
         *agt_evaluate("tool_0", "rule-0", False)),
    ]

    results = []
    for name, what, call, check in rows:
        check()  # fail early if the setup does not decide what we think it decides
        p50, p99, rate = measure(call, args.samples)
        results.append((name, what, p50, p99, rate))
        print(f"{name}: p50 {p50:.2f} µs, p99 {p99:.2f} µs, {rate:,.0f} calls/s; {check()}",
              flush=True)

    print("\n| library | what one call does | p50 µs | p99 µs | calls/s |")
    print("|---|---|---:|---:|---:|")
    for name, what, p50, p99, rate in results:
        print(f"| {name} | {what} | {p50:.2f} | {p99:.2f} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
