"""Run roles on hosts: batched probes, actions, handlers, check/diff, recap, report.

A play goes in two phases. Planning is local and pure: every host's operations
are built (templates rendered, variables checked) before any host is touched,
so bad input stops the play with nothing changed anywhere. Running then visits
the hosts in parallel (at most ``forks`` at once): one batched probe per host,
the actions of the steps that need them, a fresh batched probe after each
change (later steps may depend on it; it rides on the change's last round trip),
and the notified handlers once at the end.

Handlers that restart a pool member run inside a slot (``handler_slots``: one
semaphore per pool, sized by its capacity floor), so the hosts of a pool are
configured in parallel while at most (pool size - floor) of them restart at once.

Handlers survive a failed or interrupted run: a step that notifies one first
records its name on the host (``PENDING_HANDLERS``), in the same round trip as
its change; the handler's success clears it, and the next run finds and runs
whatever is still recorded.
"""

from __future__ import annotations

import difflib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from .facts import FACT_MARKER, ProbeBatch
from .operations import Operation, PreconditionFailed
from .output import Masker, Output
from .roles.base import HostContext
from .shell import Command, Upload, chain, q
from .transports import CommandFailed, Transport, TransportError, connect

PENDING_HANDLERS = "/var/lib/veza-ops/pending-handlers"
DEFAULT_FORKS = 10


@dataclass
class HostPlan:
    host: object
    operations: list
    handlers: dict  # name -> command, in the order they run
    warnings: list = field(default_factory=list)
    handler_slot: object = None  # a semaphore shared by the hosts of one pool: held while handlers run


def restart_slots(plans, group: str, floor) -> None:
    """Give every plan of a host in ``group`` the same slot: ``floor.restart_slots`` handlers at once
    (pool size - the ``CapacityFloor``'s min_up, at least one)."""
    slot = threading.BoundedSemaphore(floor.restart_slots)
    for plan in plans:
        if group in plan.host.groups:
            plan.handler_slot = slot


@dataclass
class StepResult:
    host: str
    step: str
    status: str  # ok | changed | failed | skipped
    seconds: float
    detail: str = ""


def plan_hosts(hosts, roles, inventory) -> list:
    """Build every host's operations; raises (TemplateError, InvalidValue, ...) before touching any host."""
    plans = []
    for host in hosts:
        operations, handlers, warnings = [], {}, []
        for role in roles:
            variables = {**host.vars_with(role.defaults), "inventory_hostname": host.name}
            context = HostContext(host=host, inventory=inventory, vars=variables)
            operations.extend(role.steps(context))
            handlers.update(role.handlers(variables))
            warnings.extend(context.warnings)
        operations.sort(key=lambda op: not op.precondition)  # stable: preconditions first, order kept
        plans.append(HostPlan(host=host, operations=operations, handlers=handlers, warnings=warnings))
    return plans


def probe_facts(transport: Transport, operations, extra_probes=()) -> list:
    """Run all probes (and ``extra_probes`` after them) in one round trip; one fact string each."""
    batch = ProbeBatch([op.probe for op in operations] + list(extra_probes))
    if not batch:
        return []
    return batch.facts(transport.run(batch.script(), warn=True).stdout)


def remember_handlers(names) -> str:
    """Record handler names on the host before the change that needs them (survives a failed run)."""
    lines = "".join(f"{name}\n" for name in names)
    return f"mkdir -p {q(PENDING_HANDLERS.rsplit('/', 1)[0])} && printf %s {q(lines)} >> {q(PENDING_HANDLERS)}"


def forget_handlers(names) -> str:
    """Remove these handler names from the host's pending record; other plays' names stay recorded."""
    record, staging = q(PENDING_HANDLERS), q(PENDING_HANDLERS + ".tmp")
    patterns = " ".join(f"-e {q(name)}" for name in names)
    return (f"if [ -e {record} ]; then {{ grep -vxF {patterns} {record} || true; }} > {staging} && "
            f"if [ -s {staging} ]; then mv -f {staging} {record}; else rm -f {staging} {record}; fi; fi")


def _apply(transport: Transport, actions, then_probe: str | None = None) -> str | None:
    """Run actions in order, joining consecutive commands into one round trip.

    ``then_probe`` (a ``ProbeBatch`` script) rides on the last round trip, run only once the actions
    succeeded, and that round trip's output is returned for the batch to read; None when the actions
    did not end with a command (then the caller probes on its own).
    """
    pending = []

    def flush(probe=None):
        if not pending:
            return None
        command = chain(pending)
        pending.clear()
        if probe is None:
            transport.run(command)
            return None
        # The probes' own exit codes mean nothing (probe_facts runs them with warn): end on true.
        return transport.run(f"{command} && {{\n{probe}\ntrue\n}}").stdout

    for action in actions:
        if isinstance(action, Command):
            pending.append(action.command)
        elif isinstance(action, Upload):
            flush()
            transport.put(action)
    return flush(then_probe)


def parse_env(text: str) -> dict:
    """KEY=VALUE lines of an env file (comments and blank lines skipped)."""
    pairs = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            pairs[key.strip()] = value
    return pairs


def describe_difference(current: str, operation: Operation, masker: Masker) -> tuple:
    """What --diff prints for one changed file, and whether it holds values: a masked unified diff (it
    does), or for secret files the changed keys only (``KEY: changed``; it holds none, so the output masks
    the known secret values in it but not the ``NAME: value`` look of the line)."""
    path = operation.diff_path
    if operation.diff_mode == "keys":
        old, new = parse_env(current), parse_env(operation.diff_new)
        changes = [f"  {key}: {'added' if key not in old else 'removed' if key not in new else 'changed'}"
                   for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
        text = "\n".join([f"--- {path}: keys that change (values never shown)", *changes]) if changes else ""
        return masker.values_only(text), False
    lines = difflib.unified_diff(current.splitlines(keepends=True), operation.diff_new.splitlines(keepends=True),
                                 fromfile=f"{path} (on host)", tofile=f"{path} (rendered)")
    return masker("".join(lines)), True


def run_host(plan: HostPlan, *, check: bool, diff: bool, output: Output, transport_factory=connect,
             stopping=None) -> list:
    """Run one host's plan; return its step results. Never raises for host-side trouble.

    ``stopping`` (a threading.Event) set means the play was interrupted: the step in flight ends,
    the later ones are skipped and the handlers wait on the host for the next run.
    """
    name = plan.host.name
    results = []

    def interrupted():
        return stopping is not None and stopping.is_set()

    def record(step, status, started, detail=""):
        result = StepResult(name, step, status, round(time.monotonic() - started, 3), output.masker(detail))
        results.append(result)
        output.step(name, status, result.seconds, step + (" (check)" if check and status == "changed" else ""),
                    result.detail)

    if interrupted():  # interrupted before this host's turn: not even probed
        return [StepResult(name, operation.name, "skipped", 0.0, "interrupted") for operation in plan.operations]
    started = time.monotonic()
    transport = None
    try:
        transport = transport_factory(plan.host)
        *facts, pending = probe_facts(transport, plan.operations, [f"cat {q(PENDING_HANDLERS)}"])
    except (TransportError, CommandFailed) as exc:
        record("connect", "failed", started, str(exc))
        return results
    # Handlers an earlier run changed things for but never ran (failed or interrupted).
    notified = [handler for handler in plan.handlers if handler in pending.splitlines()]
    failed = False
    for index, operation in enumerate(plan.operations):
        started = time.monotonic()
        if failed or interrupted():
            results.append(StepResult(name, operation.name, "skipped", 0.0, "interrupted" if not failed else ""))
            continue
        try:
            actions = list(operation.decide(facts[index]))
            if not actions:
                record(operation.name, "ok", started)
                continue
            if diff and operation.diff_new is not None:
                current = transport.run(f"cat {q(operation.diff_path)} 2>/dev/null || true", warn=True).stdout
                text, holds_values = describe_difference(current, operation, output.masker)
                if text:
                    output.line(text.rstrip("\n"), holds_values=holds_values)
            if not check:
                new_handlers = [h for h in operation.notify if h in plan.handlers]
                if new_handlers:
                    actions.insert(0, Command(remember_handlers(new_handlers)))
                # The later steps' probes again (a change may change their facts), in the actions' last round trip.
                later = ProbeBatch([op.probe for op in plan.operations[index + 1:]])
                printed = _apply(transport, actions, later.script() if later else None)
                if printed is None or FACT_MARKER not in printed:  # no command last, or one that ended the shell early
                    facts[index + 1:] = probe_facts(transport, plan.operations[index + 1:])
                else:
                    facts[index + 1:] = later.facts(printed)
            notified.extend(h for h in operation.notify if h not in notified)
            record(operation.name, "changed", started)
        except PreconditionFailed as exc:
            record(operation.name, "failed", started, str(exc))
            failed = True
        except (CommandFailed, TransportError) as exc:
            record(operation.name, "failed", started, str(exc))
            failed = True
    if not failed and not interrupted():
        if plan.handler_slot is not None and not check and any(h in notified for h in plan.handlers):
            with plan.handler_slot:
                if not interrupted():  # waited for the slot while the play was interrupted
                    _run_handlers(plan, notified, transport, check, record)
        else:
            _run_handlers(plan, notified, transport, check, record)
    transport.close()
    return results


def _run_handlers(plan: HostPlan, notified: list, transport: Transport, check: bool, record) -> None:
    """Notified handlers once each, in declaration order; each one that succeeded leaves the pending record.

    After a failed handler the later ones do not run (they stay pending for the next run): a keepalived
    reload must not follow an HAProxy reload that failed and was rolled back, say.
    """
    ran, failed = [], False
    for handler in plan.handlers:
        if handler not in notified:
            continue
        started = time.monotonic()
        if check:
            record(f"handler: {handler}", "changed", started)
            continue
        if failed:
            record(f"handler: {handler}", "skipped", started, "an earlier handler failed; it stays pending")
            continue
        try:
            transport.run(plan.handlers[handler])
            record(f"handler: {handler}", "changed", started)
            ran.append(handler)
        except (CommandFailed, TransportError) as exc:
            record(f"handler: {handler}", "failed", started, str(exc))
            failed = True
    if ran and not check:
        try:
            transport.run(forget_handlers(ran))
        except (CommandFailed, TransportError) as exc:
            record("handlers: clear pending record", "failed", time.monotonic(), str(exc))


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


def run_play(title: str, plans, *, check=False, diff=False, output: Output, forks: int = DEFAULT_FORKS,
             transport_factory=connect) -> PlayResult:
    """Run host plans, at most ``forks`` hosts at once; print the recap; return the results.

    One failed host does not stop the others (Ansible's semantics). An interrupt (Ctrl-C, or SIGTERM
    raised as one) stops every host before its next step, then goes on up once the steps in flight ended.
    """
    started = time.monotonic()
    output.line(f"== {title}{' (check mode: nothing is changed)' if check else ''}")
    for plan in plans:
        for warning in plan.warnings:
            output.line(f"warning: {warning}")
    stopping = threading.Event()
    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(plans) or 1))) as pool:
        try:
            per_host = list(pool.map(lambda p: run_host(p, check=check, diff=diff, output=output,
                                                         transport_factory=transport_factory, stopping=stopping), plans))
        except KeyboardInterrupt:
            stopping.set()  # the pool's exit then waits for the steps in flight, each host stopping after its own
            raise
    result = PlayResult(title=title, check=check, seconds=time.monotonic() - started,
                        steps=[s for steps in per_host for s in steps])
    output.recap(title, result.seconds, result.recap())
    return result
