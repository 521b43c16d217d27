"""test.host-failover: take out a whole Incus host under load; its instances go DOWN, the VIP stays served.

    0 pre-flight   the host running and answering; on the surviving balancer every server of the pools
                   with one on the host UP; one VIP holder
    1 load         a MixedLoad through the VIP (new-connection and kept-alive requests) answered
    2 strike (t0)  the host is stopped (``incus stop --force`` of its outer container), frozen (``incus
                   pause``) or cut off the lab bridge (its port set down); t0 is when the strike was issued
    3 DOWN         every pool server on the host DOWN on the survivor within ``down_budget`` of t0
    4 VIP          the surviving balancer holds the VIP within ``vip_budget`` (at once if it held it)
                   and keeps it while the host is out
    5 carry        the survivors carry the load alone for ``dwell`` seconds
    6 back         the host is brought back (start / resume / link up) and its instances run again
    7 UP           every server on it UP again on the survivor within ``up_timeout``
    8 settle       no server leaves UP again for ``settle`` seconds (no flapping); the VIP moves at most
                   as keepalived's preemption allows (0 times off, once on)
    9 load         0 failed new-connection requests; at most one failed request per kept-alive connection

Whatever happens (a failed step, an exception, Ctrl-C or SIGTERM raised as one) a struck host is brought
back before ``run`` returns, and the report says so. A configuration of ``engine``: ``StepEngine`` steps,
``Timeline`` marks (report times relative to t0), ``wait_for`` waits, ``common_report``; the stoppers
live in ``stoppers.py``, HAProxy's view in ``server_watch.ServerSampler``, the VIP in ``vip_watch``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .engine import PlannedStep, StepEngine, StepFailed, Timeline, common_report, wait_for
from .host_outage import first_at, flaps, is_down, is_up, path
from .vip_watch import ownership_checks

STEP_PREFLIGHT = "0 pre-flight"
STEP_LOAD = "1 load flowing"
STEP_STRIKE = "2 take the host out (t0)"
STEP_VIP = "4 VIP on the survivor"
STEP_CARRY = "5 survivors carry the load"
STEP_BACK = "6 host back"
STEP_SETTLE = "8 no flapping"
STEP_VIP_PLACEMENT = "8 VIP placement"
STEP_LOAD_NEW = "9 load: new connections"
STEP_LOAD_KEEPALIVE = "9 load: kept-alive"
STEP_RESTORE = "cleanup: host brought back"
DOWN_GRACE = 10.0  # seconds waited past the budget, so a late DOWN is measured, not just missed


@dataclass
class HostFailoverSettings:
    method: str  # stop | freeze | cut
    down_budget: float  # seconds from t0 for every server on the host to be DOWN
    vip_budget: float = 5.0  # seconds from t0 for the survivor to hold the VIP
    dwell: float = 3.0  # seconds the host stays out once everything on it is DOWN
    return_timeout: float = 120.0  # seconds for the host and its instances to run again
    up_timeout: float = 60.0  # seconds for its servers to be UP again after the host is back
    settle: float = 10.0  # seconds watched for flapping once every server is back UP
    lead_in: float = 2.0  # seconds of load before the strike
    preempt: bool = False
    preempt_delay: float = 0.0

    @property
    def budget_seconds(self) -> float:
        """The longest a run can take (every wait at its bound, plus margin for the commands): the cap of
        its load and samplers."""
        return (self.lead_in + self.down_budget + DOWN_GRACE + self.vip_budget + self.dwell + 2 * self.return_timeout
                + self.up_timeout + self.settle + self.preempt_delay + 120)


class HostFailoverRun:
    """One drill against injected pieces (``tasks/host_failover.py`` wires the real ones).

    ``plan``: ``host_outage.HostPlan``; ``stopper``: ``stop()``, ``start()``, ``describe(action)``,
    ``method``; ``host_ready()`` -> (bool, detail): the host and every instance on it running again;
    ``servers``: a ``server_watch.ServerSampler`` on the survivor; ``vip_sampler(node, seconds)``: a
    started ``vip_watch.VipSampler`` (None without a VIP); ``load``: a MixedLoad through the VIP;
    ``undo_leftovers()`` -> [what it did]: bring back a host an earlier, killed drill left out."""

    def __init__(self, settings: HostFailoverSettings, plan, *, stopper, host_ready, servers, load, output,
                 vip_sampler=None, undo_leftovers=list, clock=time.monotonic, sleep=time.sleep):
        self.settings, self.plan, self.stopper, self.host_ready = settings, plan, stopper, host_ready
        self.undo_leftovers = undo_leftovers
        self.servers, self.load, self.output, self.vip_sampler = servers, load, output, vip_sampler
        self.clock, self.sleep = clock, sleep
        self.engine = StepEngine(output, clock)
        self.marks = Timeline()
        self.samplers: dict = {}  # balancer -> [VipSampler]
        self.vip_before: list = []
        self.host_detail = ""
        self.interrupted = False
        self.interruption = None
        self._struck = False
        self._restored = False

    @property
    def survivor(self) -> str:
        return self.plan.survivors[0]

    # -- running -------------------------------------------------------------------------------------------
    def run(self) -> dict:
        self.marks["started"] = self.clock()
        self.output.line(f"== test.host-failover: Incus host {self.plan.host} ({', '.join(self.plan.instances)}) "
                         f"out by {self.stopper.describe('stop')}; survivor {self.survivor}")
        try:
            self.servers.start()
            if self.vip_sampler is not None:
                for node in [*self.plan.survivors, *self.plan.balancers]:
                    self.samplers[node] = [self.vip_sampler(node, self.settings.budget_seconds)]
            self.engine.run_plan(self._plan())
        except KeyboardInterrupt as interruption:  # Ctrl-C, or SIGTERM/SIGHUP raised as one by the task
            self.interrupted, self.interruption = True, interruption
            self.output.line(f"interrupted ({interruption or 'SIGINT'}): bringing {self.plan.host} back before exiting")
        self._wind_down()
        return self._report()

    def _plan(self) -> list:
        plan = [PlannedStep(STEP_PREFLIGHT, self._preflight, abort_on_failure=True),
                PlannedStep(STEP_LOAD, self._load_flowing, abort_on_failure=True),
                PlannedStep(STEP_STRIKE, self._strike, abort_on_failure=True)]
        plan += [PlannedStep(f"3 DOWN {server.label}", lambda s=server: self._down(s)) for server in self.plan.servers]
        if self.vip_sampler is not None:
            plan.append(PlannedStep(STEP_VIP, self._vip_on_survivor))
        plan += [PlannedStep(STEP_CARRY, self._carry),
                 PlannedStep(STEP_BACK, self._bring_back, abort_on_failure=True)]
        plan += [PlannedStep(f"7 UP {server.label}", lambda s=server: self._up(s)) for server in self.plan.servers]
        plan.append(PlannedStep(STEP_SETTLE, self._settle))
        return plan

    def _preflight(self):
        undone = self.undo_leftovers()  # an earlier drill killed mid-way: converge first
        if undone:
            self.output.line(f"an earlier drill left {self.plan.host} out: {'; '.join(undone)}")
            wait_for(self._ready, self.settings.return_timeout, interval=0.5, clock=self.clock, sleep=self.sleep)
        ready, detail = self.host_ready()
        if not ready:
            raise StepFailed(f"{self.plan.host} not ready: {detail}; nothing was touched")
        if not wait_for(lambda: self.servers.all(is_up), 15.0, interval=0.1, clock=self.clock, sleep=self.sleep):
            states = ", ".join(f"{s.label} {self.servers.status(s) or 'unread'}" for s in self.plan.servers)
            raise StepFailed(f"on {self.survivor} not every server on {self.plan.host} is UP ({states}); "
                             "nothing was touched")
        detail = f"{self.plan.host}: {detail}; on {self.survivor}: " + \
            ", ".join(f"{s.label} UP" for s in self.plan.servers)
        if self.samplers:
            held = wait_for(lambda: all(x[-1].samples for x in self.samplers.values()), 5.0, clock=self.clock,
                            sleep=self.sleep)
            self.vip_before = [node for node, xs in self.samplers.items() if xs[-1].samples and xs[-1].samples[-1][1]]
            if held is None or len(self.vip_before) != 1:
                raise StepFailed(f"VIP held by {', '.join(self.vip_before) or 'nobody'} (want exactly one); "
                                 "run inv haproxy.setup; nothing was touched")
            detail += f"; VIP on {self.vip_before[0]}"
        return detail

    def _load_flowing(self):
        self.marks["load_started"] = self.clock()
        self.load.start()
        self.sleep(self.settings.lead_in)
        samples = list(self.load.samples)
        failed = [x for x in samples if x.failed]
        kinds = sorted({x.connection for x in samples if not x.failed})
        if not samples or failed:
            raise StepFailed(f"{len(samples)} requests in {self.settings.lead_in:g}s, {len(failed)} failed; "
                             "fix the pools before taking a host out")
        return f"{len(samples)} requests in {self.settings.lead_in:g}s ({', '.join(kinds)}), all answered"

    def _strike(self):
        self.marks["t0"] = self.clock()
        self._struck = True  # set first: a strike that fails half-way (or Ctrl-C) may have taken effect
        self.stopper.stop()
        self.marks["strike_returned"] = self.clock()
        seconds = self.marks["strike_returned"] - self.marks["t0"]
        return f"{self.stopper.describe('stop')} (returned after {seconds:.2f}s)", {"command_seconds": round(seconds, 3)}

    def _down(self, server):
        s, t0 = self.settings, self.marks["t0"]
        wait_for(lambda: first_at(self.servers.changes[server], is_down, t0) is not None,
                 max(0.0, t0 + s.down_budget + DOWN_GRACE - self.clock()), interval=0.05, clock=self.clock,
                 sleep=self.sleep)
        changes = self.servers.changes[server]
        down = first_at(changes, is_down, t0)
        states = path([c for c in changes if c[0] >= t0 - 2], self.marks.rel)
        if down is None:
            raise StepFailed(f"not DOWN within {s.down_budget + DOWN_GRACE:g}s on {self.survivor}; states {states}")
        seconds = round(down - t0, 3)
        detail = f"DOWN {seconds:.2f}s after t0 (budget {s.down_budget:g}s) on {self.survivor}; states {states}"
        if seconds > s.down_budget:
            raise StepFailed(detail, {"down_seconds": seconds})
        return detail, {"down_seconds": seconds}

    def _holds(self, node) -> bool:
        return any(x.samples and x.samples[-1][1] for x in self.samplers.get(node, []))

    def _vip_on_survivor(self):
        t0, budget = self.marks["t0"], self.settings.vip_budget
        held = wait_for(lambda: self._holds(self.survivor), max(0.0, t0 + budget - self.clock()), clock=self.clock,
                        sleep=self.sleep)
        if held is None:
            raise StepFailed(f"{self.survivor} does not hold the VIP {budget:g}s after t0 "
                             f"(held before by {', '.join(self.vip_before) or 'nobody'})")
        samples = [p for x in self.samplers[self.survivor] for p in x.samples]
        since = next((t for t, holds in samples if holds and t >= t0), held)
        if self.vip_before == [self.survivor] and all(holds for t, holds in samples if t >= t0 - 1):
            since = t0
        self.marks["vip_on_survivor"] = since
        seconds = round(since - t0, 3)
        how = "held it before and kept it" if since == t0 else f"took it {seconds:.2f}s after t0"
        return f"{self.survivor} {how}", {"vip_move_seconds": seconds}

    def _all_down_at(self):
        times = [first_at(self.servers.changes[s], is_down, self.marks["t0"]) for s in self.plan.servers]
        return max(times) if times and None not in times else None

    def _carry(self):
        all_down = self._all_down_at()
        self.marks["all_down"] = all_down
        start = all_down if all_down is not None else self.clock()
        self.sleep(max(0.0, start + self.settings.dwell - self.clock()))
        window = [x for x in list(self.load.samples) if x.t >= start]
        failed = [x for x in window if x.failed]
        on_host = [x for x in window if not x.failed and x.instance in self.plan.instances]
        served = {}
        for x in window:
            if not x.failed:
                served[x.instance] = served.get(x.instance, 0) + 1
        detail = (f"{len(window)} requests in {self.clock() - start:.1f}s with {self.plan.host} out, {len(failed)} "
                  f"failed, served by " + ", ".join(f"{k} x{v}" for k, v in sorted(served.items(), key=str)))
        if not window or failed or on_host:
            raise StepFailed(detail + (f"; {len(on_host)} answered by an instance on {self.plan.host}" if on_host else ""))
        return detail

    def _start_host(self):
        """Start / resume / reconnect the host and wait until it and its instances run; the clock time, or None."""
        self.marks["start_issued"] = self.clock()
        self.stopper.start()
        self._restored = True
        back = wait_for(self._ready, self.settings.return_timeout, interval=0.5, clock=self.clock, sleep=self.sleep)
        self.marks["host_back"] = back
        if back is None:
            raise StepFailed(f"{self.stopper.describe('start')}; not back within {self.settings.return_timeout:g}s: "
                             f"{self.host_detail}")
        return back

    def _bring_back(self):
        try:
            back = self._start_host()
        finally:
            self._restart_samplers()
        seconds = round(back - self.marks["start_issued"], 3)
        return f"{self.stopper.describe('start')}; {self.host_detail} {seconds:.2f}s later", \
            {"host_back_seconds": seconds}

    def _ready(self) -> bool:
        ready, self.host_detail = self.host_ready()
        return ready

    def _restart_samplers(self) -> None:
        """A stop ended the host's VIP samplers (a freeze or a cut only paused them): sample it again."""
        for node in self.plan.balancers:
            if node in self.samplers and not any(x.alive() for x in self.samplers[node]):
                self.samplers[node].append(self.vip_sampler(node, self.settings.budget_seconds))

    def _up(self, server):
        start = self.marks["start_issued"]
        wait_for(lambda: first_at(self.servers.changes[server], is_up, start) is not None,
                 max(0.0, start + self.settings.return_timeout + self.settings.up_timeout - self.clock()),
                 interval=0.1, clock=self.clock, sleep=self.sleep)
        changes = self.servers.changes[server]
        up = first_at(changes, is_up, start)
        states = path([c for c in changes if c[0] >= start], self.marks.rel)
        if up is None:
            raise StepFailed(f"not UP again on {self.survivor}; states {states}")
        back = self.marks.get("host_back")
        data = {"up_seconds": round(up - start, 3),
                "up_after_host_back_seconds": round(up - back, 3) if back is not None else None}
        return f"UP {up - start:.2f}s after the start was issued; states {states}", data

    def _all_up_at(self):
        start = self.marks.get("start_issued")
        times = [first_at(self.servers.changes[s], is_up, start) for s in self.plan.servers]
        return max(times) if times and None not in times else None

    def _settle(self):
        all_up = self._all_up_at()
        self.marks["all_up"] = all_up
        if all_up is None:
            raise StepFailed("not every server came back UP: nothing to watch")
        s = self.settings
        self.sleep(max(0.0, all_up + s.settle + (s.preempt_delay if s.preempt else 0) - self.clock()))
        self.marks["settle_end"] = self.clock()
        seen = {server.label: flaps(self.servers.changes[server], first_at(self.servers.changes[server], is_up,
                                                                          self.marks["start_issued"]))
                for server in self.plan.servers}
        bad = {label: changes for label, changes in seen.items() if changes}
        watched = self.marks["settle_end"] - all_up
        if bad:
            raise StepFailed("left UP after coming back: " + "; ".join(
                f"{label} {path(changes, self.marks.rel)}" for label, changes in bad.items()),
                {"flaps": {label: [[self.marks.rel(t), st] for t, st in ch] for label, ch in bad.items()}})
        return f"every server stayed UP for {watched:.1f}s after the last came back"

    # -- wind-down and verdict ------------------------------------------------------------------------------
    def _wind_down(self) -> None:
        try:
            if self._struck and not self._restored:
                self.engine.step(STEP_RESTORE, self._restore)
        except KeyboardInterrupt:
            self.output.line(f"WARNING: interrupted again; {self.plan.host} may still be out: run "
                             f"{self.stopper.describe('start')}")
            raise
        finally:
            self.marks["load_stopped"] = self.clock()
            if "load_started" in self.marks and not self.load.stop():
                self.output.line("warning: the load did not end in time; its last requests are not counted")
            self.servers.stop()
            for samplers in self.samplers.values():
                for sampler in samplers:
                    sampler.stop()

    def _restore(self):
        self._start_host()
        return f"{self.stopper.describe('start')}; {self.host_detail}"

    def vip_move_window(self):
        """(start, end) when the VIP was on the host at the strike: requests sent from a request timeout
        before t0 until the survivor held the VIP went to a balancer that died under them (test.lb-failover's
        case, inside this drill); None when the survivor held the VIP throughout."""
        moved = self.marks.get("vip_on_survivor")
        if not set(self.vip_before) & set(self.plan.balancers) or moved is None:
            return None
        return self.marks["t0"] - getattr(self.load, "timeout", 0.0), moved

    def _judge_load(self, samples: list, by_kind: dict, connections: int) -> dict:
        """New connections: none may fail, but for those sent to a dying VIP holder before the VIP moved
        (counted apart). Kept-alive connections: at most one failure each."""
        from ..loadtest.keepalive import KEEPALIVE, NEW_CONNECTION

        started = self.clock()
        new, kept = by_kind[NEW_CONNECTION], by_kind[KEEPALIVE]
        window = self.vip_move_window()
        failed_new = [x for x in samples if x.failed and x.connection == NEW_CONNECTION]
        in_move = [x for x in failed_new if window is not None and window[0] <= x.t <= window[1]]
        if new["total"]:
            detail = f"{len(failed_new) - len(in_move)} of {new['total']} failed"
            if window is not None:
                detail += (f"; {len(in_move)} more sent to {', '.join(self.vip_before)} on {self.plan.host} in the "
                           f"{window[1] - self.marks['t0']:.2f}s before the VIP moved (counted apart)")
            self.engine.check(STEP_LOAD_NEW, len(failed_new) == len(in_move), detail, started)
        if kept["total"]:
            self.engine.check(STEP_LOAD_KEEPALIVE, kept["failed"] <= connections,
                              f"{kept['failed']} of {kept['total']} failed on {connections} kept-alive connections "
                              "(at most one per open connection)", started)
        return {"new_failed_outside_vip_move": len(failed_new) - len(in_move), "new_failed_in_vip_move": len(in_move),
                "vip_move_window": [self.marks.rel(t) for t in window] if window is not None else None}

    def _judge_vip(self, per_node: dict, allowed_moves: int) -> dict:
        m = self.marks
        ownership = ownership_checks(per_node, m.get("vip_on_survivor"), m.get("host_back"))
        survivor = per_node.get(self.survivor, [])
        since, until = m.get("vip_on_survivor"), m.get("start_issued")
        lost = [t for t, holds in survivor if since is not None and until is not None and since <= t < until and not holds]
        moves = ownership["moves_after_return"]
        if m.get("host_back") is not None and self.engine.passed(STEP_VIP):
            started = self.clock()
            self.engine.check(STEP_VIP_PLACEMENT, not lost and len(moves) <= allowed_moves,
                              f"{self.survivor} held the VIP throughout the outage"
                              + (f" except {len(lost)} samples" if lost else "")
                              + f"; after the return the VIP moved {len(moves)} time(s) (allowed {allowed_moves}: "
                              f"preemption {'on' if self.settings.preempt else 'off'})", started)
        return ownership | {"survivor_lost_samples": len(lost)}

    def _report(self) -> dict:
        from ..loadtest.facade import phase_counts
        from ..loadtest.keepalive import kind_counts

        m, s = self.marks, self.settings
        samples = list(self.load.samples) if "load_started" in m else []
        by_kind = kind_counts(samples)
        connections = getattr(getattr(self.load, "keepalive", None), "connections", 0)
        end = m.get("settle_end", m.get("load_stopped", float("inf")))
        per_node = {node: [p for x in xs for p in x.samples if p[0] <= end] for node, xs in self.samplers.items()}
        vip = self._judge_vip(per_node, 1 if s.preempt else 0) if per_node else {}
        judged = self._judge_load(samples, by_kind, connections) if m.get("t0") is not None and not self.interrupted \
            else {}
        phases = phase_counts(samples, [("before", m.get("started")), ("outage", m.get("t0")),
                                        ("all_down", m.get("all_down")), ("return", m.get("start_issued")),
                                        ("back_up", m.get("all_up"))])
        report = common_report(self.engine, m, samples, phases, interrupted=self.interrupted)
        report["requests"].update(phases=phases, by_kind=by_kind, **judged,
                                  load=self.load.describe() if hasattr(self.load, "describe") else None)
        step_data = {step.name: step.data for step in self.engine.steps}
        rel = m.rel
        instances = []
        for server in self.plan.servers:
            changes = self.servers.changes[server]
            instances.append({
                "pool": server.pool, "server": server.name,
                "down_seconds": step_data.get(f"3 DOWN {server.label}", {}).get("down_seconds"),
                "up_seconds": step_data.get(f"7 UP {server.label}", {}).get("up_seconds"),
                "up_after_host_back_seconds": step_data.get(f"7 UP {server.label}", {}).get("up_after_host_back_seconds"),
                "transitions": [{"t": rel(t), "status": status} for t, status in changes]})
        return report | {
            "host": self.plan.host, "address": self.plan.address, "method": s.method,
            "stop_command": self.stopper.describe("stop"), "start_command": self.stopper.describe("start"),
            "survivor": self.survivor, "balancers_on_host": self.plan.balancers,
            "settings": dict(s.__dict__),
            "instances": instances,
            "host_back_seconds": m.between("start_issued", "host_back"),
            "vip": {"held_before": self.vip_before,
                    "move_seconds": step_data.get(STEP_VIP, {}).get("vip_move_seconds"),
                    "two_holder_samples": vip.get("two_holder_samples"),
                    "no_holder_samples_after_move": vip.get("no_holder_samples_after_move"),
                    "survivor_lost_samples": vip.get("survivor_lost_samples"),
                    "moves_after_return": [{"t": rel(c["t"]), "to": c["to"]} for c in vip.get("moves_after_return", [])],
                    "per_node": {n: [[rel(t), h] for t, h in v] for n, v in per_node.items()}},
            "runtime_reads": {"balancer": self.survivor, "reads": self.servers.reads,
                              "errors": self.servers.error_count},
        }
