"""Run roles on hosts: batched probes, actions, handlers, check/diff, recap, report.

A play goes in two phases. Planning is local and pure: every host's operations
are built (templates rendered, variables checked) before any host is touched,
so bad input stops the play with nothing changed anywhere. Running then visits
the hosts in parallel: one batched probe per host, the actions of the steps that
need them, a fresh batched probe after each change (later steps may depend on
it), and the notified handlers once at the end.
"""

from __future__ import annotations

import difflib
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable

from .inventory import Host, Inventory, is_secret_name
from .operations import Command, Operation, PreconditionFailed, Upload
from .transports import CommandFailed, Transport, TransportError, connect, q

FACT_MARKER = "@@veza-fact@@"


@dataclass
class Role:
    """A role: its defaults, its steps for one host, its handlers (name -> command)."""

    name: str
    defaults: dict
    steps: Callable[["HostContext"], list]
    handlers: Callable[[dict], dict] = lambda variables: {}


@dataclass
class HostContext:
    host: Host
    inventory: Inventory
    vars: dict


@dataclass
class HostPlan:
    host: Host
    operations: list
    handlers: dict  # name -> command, in the order they run


@dataclass
class StepResult:
    host: str
    step: str
    status: str  # ok | changed | failed | skipped
    seconds: float
    detail: str = ""


class Masker:
    """Replaces secret values with asterisks in anything shown or written."""

    def __init__(self, secrets=()):
        self.secrets = sorted({str(s) for s in secrets if s not in (None, "") and len(str(s)) >= 3}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "********")
        return text

    @classmethod
    def for_hosts(cls, hosts, extra=()):
        values = list(extra)
        for host in hosts:
            secret_vars = host.vars.get("secret_vars", ())
            values += [v for k, v in host.vars.items() if is_secret_name(k, secret_vars) and isinstance(v, (str, int))]
        return cls(values)


class Output:
    """Whole lines only, one writer at a time, so parallel hosts never interleave mid-line."""

    def __init__(self, masker: Masker, stream=None):
        self.masker = masker
        self.stream = stream or sys.stdout
        self.lock = threading.Lock()

    def line(self, text: str) -> None:
        with self.lock:
            self.stream.write(self.masker(text) + "\n")
            self.stream.flush()

    def step(self, result: StepResult, note: str = "") -> None:
        detail = f"  {result.detail}" if result.detail else ""
        self.line(f"{result.host:<16} {result.status:<8} {result.seconds:6.2f}s  {result.step}{note}{detail}")


def plan_hosts(hosts, roles, inventory: Inventory) -> list:
    """Build every host's operations; raises (TemplateError, ValueError, ...) before touching any host."""
    plans = []
    for host in hosts:
        operations, handlers = [], {}
        for role in roles:
            variables = {**host.vars_with(role.defaults), "inventory_hostname": host.name}
            context = HostContext(host=host, inventory=inventory, vars=variables)
            operations.extend(role.steps(context))
            handlers.update(role.handlers(variables))
        operations.sort(key=lambda op: not op.precondition)  # stable: preconditions first, order kept
        plans.append(HostPlan(host=host, operations=operations, handlers=handlers))
    return plans


def probe_facts(transport: Transport, operations) -> list:
    """Run all probes in one round trip; return one fact string per operation."""
    if not operations:
        return []
    script = "\n".join(f"printf '\\n%s %d\\n' {FACT_MARKER} {i}; ( {op.probe} ) 2>/dev/null" for i, op in enumerate(operations))
    output = transport.run(script, warn=True).stdout
    facts = [""] * len(operations)
    for chunk in output.split(f"\n{FACT_MARKER} ")[1:]:
        index, _, fact = chunk.partition("\n")
        facts[int(index)] = fact.rstrip("\n")
    return facts


def _apply(transport: Transport, actions) -> None:
    """Run actions in order, joining consecutive commands into one round trip."""
    pending = []

    def flush():
        if pending:
            transport.run(" && ".join(f"{{ {c} ; }}" for c in pending))
            pending.clear()

    for action in actions:
        if isinstance(action, Command):
            pending.append(action.command)
        elif isinstance(action, Upload):
            flush()
            transport.put(action.content, action.remote, mode=action.mode)
    flush()


def _unified_diff(transport: Transport, operation: Operation, masker: Masker) -> str:
    """Diff the real texts (so a changed secret still shows as a changed line), then mask the output."""
    current = transport.run(f"cat {q(operation.diff_path)} 2>/dev/null || true", warn=True).stdout
    lines = difflib.unified_diff(
        current.splitlines(keepends=True), operation.diff_new.splitlines(keepends=True),
        fromfile=f"{operation.diff_path} (on host)", tofile=f"{operation.diff_path} (rendered)",
    )
    return masker("".join(lines))


def run_host(plan: HostPlan, *, check: bool, diff: bool, output: Output, transport_factory=connect) -> list:
    """Run one host's plan; return its step results. Never raises for host-side trouble."""
    name = plan.host.name
    results = []
    notified = []
    transport = None

    def record(step, status, started, detail=""):
        result = StepResult(name, step, status, round(time.monotonic() - started, 3), output.masker(detail))
        results.append(result)
        output.step(result, " (check)" if check and status == "changed" else "")
        return result

    started = time.monotonic()
    try:
        transport = transport_factory(plan.host)
        facts = probe_facts(transport, plan.operations)
    except (TransportError, CommandFailed) as exc:
        record("connect", "failed", started, str(exc))
        return results
    failed = False
    for index, operation in enumerate(plan.operations):
        started = time.monotonic()
        if failed:
            results.append(StepResult(name, operation.name, "skipped", 0.0))
            continue
        try:
            actions = list(operation.decide(facts[index]))
            if not actions:
                record(operation.name, "ok", started)
                continue
            if diff and operation.diff_new is not None:
                text = _unified_diff(transport, operation, output.masker)
                if text:
                    output.line(text.rstrip("\n"))
            if not check:
                _apply(transport, actions)
                facts[index + 1:] = probe_facts(transport, plan.operations[index + 1:])
            notified.extend(h for h in operation.notify if h not in notified)
            record(operation.name, "changed", started)
        except PreconditionFailed as exc:
            record(operation.name, "failed", started, str(exc))
            failed = True
        except (CommandFailed, TransportError) as exc:
            record(operation.name, "failed", started, str(exc))
            failed = True
    if not failed:
        for handler in plan.handlers:
            if handler not in notified:
                continue
            started = time.monotonic()
            if check:
                record(f"handler: {handler}", "changed", started)
                continue
            try:
                transport.run(plan.handlers[handler])
                record(f"handler: {handler}", "changed", started)
            except (CommandFailed, TransportError) as exc:
                record(f"handler: {handler}", "failed", started, str(exc))
    if transport is not None:
        transport.close()
    return results


@dataclass
class PlayResult:
    title: str
    check: bool
    seconds: float
    steps: list = field(default_factory=list)

    def recap(self) -> dict:
        hosts = {}
        for step in self.steps:
            counts = hosts.setdefault(step.host, {"ok": 0, "changed": 0, "failed": 0, "skipped": 0})
            counts[step.status] += 1
        return hosts

    @property
    def failed(self) -> bool:
        return any(step.status == "failed" for step in self.steps)

    def to_json(self) -> dict:
        return {
            "title": self.title, "check": self.check, "seconds": round(self.seconds, 3),
            "failed": self.failed, "recap": self.recap(), "steps": [asdict(s) for s in self.steps],
        }


def run_play(title: str, plans, *, check=False, diff=False, output: Output, parallel=True,
             transport_factory=connect) -> PlayResult:
    """Run host plans (in parallel when ``parallel``), print the recap, return the results."""
    started = time.monotonic()
    output.line(f"== {title}{' (check mode: nothing is changed)' if check else ''}")
    workers = max(1, len(plans)) if parallel else 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        per_host = list(pool.map(lambda p: run_host(p, check=check, diff=diff, output=output,
                                                     transport_factory=transport_factory), plans))
    result = PlayResult(title=title, check=check, seconds=time.monotonic() - started,
                        steps=[s for steps in per_host for s in steps])
    print_recap(result, output)
    return result


def print_recap(result: PlayResult, output: Output) -> None:
    output.line(f"-- recap: {result.title} ({result.seconds:.2f}s)")
    for host, counts in result.recap().items():
        skipped = f" skipped={counts['skipped']}" if counts["skipped"] else ""
        output.line(f"{host:<16} : ok={counts['ok']} changed={counts['changed']} failed={counts['failed']}{skipped}")


def write_report(path: str, payload, masker: Masker) -> None:
    """Write ``payload`` (anything JSON can hold) to ``path`` as JSON, secrets masked."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(masker(json.dumps(payload, indent=2)) + "\n")
