"""test.lb-failover's verdict and report: after the run, the VIP-ownership checks over both nodes' samples
(one holder at a time, never none after the move, no flapping after the return), the keep-alive clients'
bound, then the report (the engine's common part plus the VIP move, the clients and the samples,
times relative to t0)."""

from __future__ import annotations

from .engine import common_report
from .vip_watch import ownership_checks

SAMPLE_INTERVAL = 0.1  # seconds between two VIP samples on a node
RETRY_AFTER = 0.25  # the retry-once client's pause before its one retry


def lb_failover_report(run, vips) -> dict:
    """The last steps of one ``LbFailoverRun`` and its report; ``vips``: the run's ``VipWatch``."""
    from ..loadtest.facade import phase_counts
    from ..loadtest.keepalive import KEEPALIVE, kind_counts

    s, m = run.settings, run.marks
    # Up to the end of the watch: the samplers' own ends (stopped by us) are not ownership.
    end = m.get("watch_end", float("inf"))
    per_node = vips.per_node(end)
    # The move as the peer's own samples saw it (the wait above polls after the stop returned,
    # and a container stop may return after the peer already took over).
    issued = m.get("kill_issued")
    if m.get("vip_on_peer") and issued is not None:
        m["vip_on_peer"] = next((t for t, holds in per_node[run.peer] if holds and t >= issued), m["vip_on_peer"])
    ownership = ownership_checks(per_node, m.get("vip_on_peer"), m.get("returned"))
    allowed_moves = 1 if s.preempt else 0
    started = run.clock()
    run.engine.check("one holder at a time", ownership["two_holder_samples"] == 0,
               f"{ownership['two_holder_samples']} samples with two holders", started)
    run.engine.check("never none after move", ownership["no_holder_samples_after_move"] == 0,
               f"{ownership['no_holder_samples_after_move']} samples with no holder after the move", started)
    moves = len(ownership["moves_after_return"])
    if m.get("returned"):
        run.engine.check("no flapping", moves <= allowed_moves,
                   f"VIP moved {moves} time(s) after {run.holder} returned (allowed {allowed_moves}: preemption "
                   f"{'on' if s.preempt else 'off'})", started)
    # The kill phase starts when the kill was issued: the container may die any time before
    # `incus stop` returns, and a request sent meanwhile belongs to the failover, not before it.
    phases = phase_counts(run.load.samples, [("before_kill", m.get("started")),
                                              ("kill_to_move", m.get("kill_issued")),
                                              ("after_move", m.get("vip_on_peer")),
                                              ("return", m.get("start_issued"))])
    # Kept-alive connections to the dead holder each lose at most the request they were sending
    # (no retry: the client sees it); a request on a connection opened again after that must not fail.
    by_kind = kind_counts(run.load.samples)
    connections = getattr(getattr(run.load, "keepalive", None), "connections", 0)
    keepalive_failed = by_kind[KEEPALIVE]["failed"]
    if connections:
        run.engine.check("keep-alive clients", keepalive_failed <= connections,
                   f"{keepalive_failed} of {by_kind[KEEPALIVE]['total']} failed on {connections} kept-alive "
                   f"connections (at most one per open connection)", started)
    retried = {}
    for _, outcome in run.retrying.results:
        retried[outcome] = retried.get(outcome, 0) + 1
    rel = m.rel  # every time in the report: seconds after t0
    t0 = m.get("t0")
    report = common_report(run.engine, m, run.load.samples, phases)
    report["requests"].update(phases=phases, by_kind=by_kind,
                              load=run.load.describe() if hasattr(run.load, "describe") else None)
    report |= {
        "method": s.method, "vip": s.vip, "holder": run.holder, "peer": run.peer,
        "advert_interval": s.advert_interval, "preempt": s.preempt,
        "vip_move_seconds": round(m["vip_on_peer"] - t0, 3) if m.get("vip_on_peer") and t0 is not None else None,
        "vip_move_from_kill_issued_seconds": round(m["vip_on_peer"] - m["kill_issued"], 3)
        if m.get("vip_on_peer") and m.get("kill_issued") else None,
        "peer_answers_seconds": round(m["peer_answers"] - t0, 3) if m.get("peer_answers") and t0 else None,
        "retry_once_client": {"retry_after_seconds": RETRY_AFTER, **retried},
        "browser_client": kind_counts(run.browser.samples),
        "websocket": run.websocket,
        "alert": run.alerts.report() if run.alerts is not None else None,
        "vip_samples": {"interval": SAMPLE_INTERVAL, "count": {n: len(v) for n, v in per_node.items()},
                        "two_holder_samples": ownership["two_holder_samples"],
                        "no_holder_samples_after_move": ownership["no_holder_samples_after_move"],
                        "in_transition_samples": ownership["in_transition_samples"],
                        "moves_after_return": [{"t": rel(c["t"]), "to": c["to"]}
                                               for c in ownership["moves_after_return"]],
                        "per_node": {n: [[rel(t), h] for t, h in v] for n, v in per_node.items()}},
    }
    return report
