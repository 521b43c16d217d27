"""test.host-failover's verdict and report: after the run, the load's two rules (new connections: none may
fail but those sent to a dying VIP holder before the VIP moved, counted apart; kept-alive connections: at
most one failure each) and the VIP placement over the survivor's samples, then the report (the engine's
common part plus the host, each instance's transitions and the VIP, times relative to t0)."""

from __future__ import annotations

from .engine import common_report
from .vip_watch import ownership_checks

STEP_VIP = "4 VIP on the survivor"
STEP_VIP_PLACEMENT = "8 VIP placement"
STEP_LOAD_NEW = "9 load: new connections"
STEP_LOAD_KEEPALIVE = "9 load: kept-alive"


def vip_move_window(run):
    """(start, end) when the VIP was on the host at the strike: requests sent from a request timeout before
    t0 until the survivor held the VIP went to a balancer that died under them (test.lb-failover's case,
    inside this drill); None when the survivor held the VIP throughout."""
    moved = run.marks.get("vip_on_survivor")
    if not set(run.vip_before) & set(run.plan.balancers) or moved is None:
        return None
    return run.marks["t0"] - getattr(run.load, "timeout", 0.0), moved


def judge_load(run, samples: list, by_kind: dict, connections: int) -> dict:
    """The load's two checks (when each kind of client sent anything) and their counts for the report."""
    from ..loadtest.keepalive import KEEPALIVE, NEW_CONNECTION

    started = run.clock()
    new, kept = by_kind[NEW_CONNECTION], by_kind[KEEPALIVE]
    window = vip_move_window(run)
    failed_new = [x for x in samples if x.failed and x.connection == NEW_CONNECTION]
    in_move = [x for x in failed_new if window is not None and window[0] <= x.t <= window[1]]
    if new["total"]:
        detail = f"{len(failed_new) - len(in_move)} of {new['total']} failed"
        if window is not None:
            detail += (f"; {len(in_move)} more sent to {', '.join(run.vip_before)} on {run.plan.host} in the "
                       f"{window[1] - run.marks['t0']:.2f}s before the VIP moved (counted apart)")
        run.engine.check(STEP_LOAD_NEW, len(failed_new) == len(in_move), detail, started)
    if kept["total"]:
        run.engine.check(STEP_LOAD_KEEPALIVE, kept["failed"] <= connections,
                         f"{kept['failed']} of {kept['total']} failed on {connections} kept-alive connections "
                         "(at most one per open connection)", started)
    return {"new_failed_outside_vip_move": len(failed_new) - len(in_move), "new_failed_in_vip_move": len(in_move),
            "vip_move_window": [run.marks.rel(t) for t in window] if window is not None else None}


def judge_vip(run, per_node: dict, allowed_moves: int) -> dict:
    """The survivor held the VIP through the outage, and it moved at most ``allowed_moves`` times after."""
    m = run.marks
    ownership = ownership_checks(per_node, m.get("vip_on_survivor"), m.get("host_back"))
    since, until = m.get("vip_on_survivor"), m.get("start_issued")
    lost = [t for t, holds in per_node.get(run.survivor, [])
            if since is not None and until is not None and since <= t < until and not holds]
    moves = ownership["moves_after_return"]
    if m.get("host_back") is not None and run.engine.passed(STEP_VIP):
        run.engine.check(STEP_VIP_PLACEMENT, not lost and len(moves) <= allowed_moves,
                         f"{run.survivor} held the VIP throughout the outage"
                         + (f" except {len(lost)} samples" if lost else "")
                         + f"; after the return the VIP moved {len(moves)} time(s) (allowed {allowed_moves}: "
                         f"preemption {'on' if run.settings.preempt else 'off'})", run.clock())
    return ownership | {"survivor_lost_samples": len(lost)}


def host_failover_report(run) -> dict:
    """The last checks of one ``HostFailoverRun`` and its report."""
    from ..loadtest.facade import phase_counts
    from ..loadtest.keepalive import kind_counts

    m, s = run.marks, run.settings
    samples = list(run.load.samples) if "load_started" in m else []
    by_kind = kind_counts(samples)
    connections = getattr(getattr(run.load, "keepalive", None), "connections", 0)
    end = m.get("settle_end", m.get("load_stopped", float("inf")))
    per_node = run.vips.per_node(end) if run.vips is not None else {}
    vip = judge_vip(run, per_node, 1 if s.preempt else 0) if per_node else {}
    judged = judge_load(run, samples, by_kind, connections) if m.get("t0") is not None and not run.interrupted \
        else {}
    phases = phase_counts(samples, [("before", m.get("started")), ("outage", m.get("t0")),
                                    ("all_down", m.get("all_down")), ("return", m.get("start_issued")),
                                    ("back_up", m.get("all_up"))])
    report = common_report(run.engine, m, samples, phases, interrupted=run.interrupted)
    report["requests"].update(phases=phases, by_kind=by_kind, **judged,
                              load=run.load.describe() if hasattr(run.load, "describe") else None)
    step_data = {step.name: step.data for step in run.engine.steps}
    rel = m.rel
    instances = []
    for server in run.plan.servers:
        down, up = step_data.get(f"3 DOWN {server.label}", {}), step_data.get(f"7 UP {server.label}", {})
        instances.append({
            "pool": server.pool, "server": server.name, "down_seconds": down.get("down_seconds"),
            "up_seconds": up.get("up_seconds"), "up_after_host_back_seconds": up.get("up_after_host_back_seconds"),
            "transitions": [{"t": rel(t), "status": status} for t, status in run.servers.changes[server]]})
    return report | {
        "host": run.plan.host, "address": run.plan.address, "method": s.method,
        "stop_command": run.host.stopper.describe("stop"), "start_command": run.host.stopper.describe("start"),
        "survivor": run.survivor, "balancers_on_host": run.plan.balancers,
        "settings": dict(s.__dict__),
        "instances": instances,
        "host_back_seconds": m.between("start_issued", "host_back"),
        "vip": {"held_before": run.vip_before,
                "move_seconds": step_data.get(STEP_VIP, {}).get("vip_move_seconds"),
                "two_holder_samples": vip.get("two_holder_samples"),
                "no_holder_samples_after_move": vip.get("no_holder_samples_after_move"),
                "survivor_lost_samples": vip.get("survivor_lost_samples"),
                "moves_after_return": [{"t": rel(c["t"]), "to": c["to"]} for c in vip.get("moves_after_return", [])],
                "per_node": {n: [[rel(t), h] for t, h in v] for n, v in per_node.items()}},
        "runtime_reads": {"balancer": run.survivor, "reads": run.servers.reads,
                          "errors": run.servers.error_count},
    }
