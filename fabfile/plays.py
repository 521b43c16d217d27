"""A setup play as the tasks run it: plan every host (failing before any change), probe without the
lock, take the lock only when something changes, run, recap, report.

``guard()``, when given, is entered after planning and held while the play runs (the deploy lock). A
no-op re-run is one probe round trip per host with no lock taken: the probe pass changes nothing,
and when it finds nothing to change (and no pending handler) its own output is the run's.
"""

from __future__ import annotations

import contextlib
import io
import sys

from .output import Output, write_report
from .runner import plan_hosts, restart_slots, run_play
from .transports import warm


def play(title, loaded, hosts, roles, *, masker, check=False, diff=False, report=None, forks=10, guard=None,
         roles_for=None, floors=()):
    """Run ``roles`` (or ``roles_for(host)``) on ``hosts``; returns the ``PlayResult``.

    ``floors`` lists ``(group, CapacityFloor)``: the handlers (restarts) of a group's hosts run at most
    ``floor.restart_slots`` at once."""
    warm(hosts)  # the connections open while the hosts are planned (nothing runs on them before)
    if roles_for is None:
        plans = plan_hosts(hosts, roles, loaded)
    else:
        plans = [plan for host in hosts for plan in plan_hosts([host], roles_for(host), loaded)]
    for group, floor in floors:
        restart_slots(plans, group, floor)
    result = None
    if guard and not check and not diff:
        captured = io.StringIO()
        probe = run_play(title, plans, check=True, output=Output(masker, captured), forks=forks)
        if not probe.failed and not any(step.status == "changed" for step in probe.steps):
            probe.check = False
            sys.stdout.write(captured.getvalue().replace(
                f"== {title} (check mode: nothing is changed)", f"== {title} (nothing to change: no lock taken)", 1))
            sys.stdout.flush()
            result = probe
    if result is None:
        with guard() if guard and not check else contextlib.nullcontext():
            result = run_play(title, plans, check=check, diff=diff, output=Output(masker), forks=forks)
    if report:
        write_report(report, result.to_json(), masker)
    return result
