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
``Timeline`` marks (report times relative to t0), ``wait_for`` waits; the stoppers live in ``stoppers.py``,
HAProxy's view in ``server_watch.ServerSampler``, the VIP in ``vip_watch.VipWatch``, the load's and the
VIP's verdict and the report in ``host_report.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .engine import PlannedStep, StepEngine, StepFailed, Timeline, wait_for
from .host_outage import first_at, flaps, is_down, is_up, last_first_at, path
from .host_report import STEP_VIP, host_failover_report
from .struck_host import StruckHost
from .vip_watch import VipWatch

STEP_PREFLIGHT = "0 pre-flight"
STEP_LOAD = "1 load flowing"
STEP_STRIKE = "2 take the host out (t0)"
STEP_CARRY = "5 survivors carry the load"
STEP_BACK = "6 host back"
STEP_SETTLE = "8 no flapping"
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
    """One drill against injected pieces (``tasks/test/host_failover.py`` wires the real ones).

    ``plan``: ``host_outage.HostPlan``; ``stopper``, ``host_ready``, ``undo_leftovers``: the
    ``struck_host.StruckHost``'s; ``servers``: a ``server_watch.ServerSampler`` on the survivor;
    ``vip_sampler(node, seconds)``: a started ``vip_watch.VipSampler`` (None without a VIP); ``load``: a
    MixedLoad through the VIP."""

    def __init__(self, settings: HostFailoverSettings, plan, *, stopper, host_ready, servers, load, output,
                 vip_sampler=None, undo_leftovers=list, clock=time.monotonic, sleep=time.sleep):
        self.settings, self.plan = settings, plan
        self.servers, self.load, self.output, self.vip_sampler = servers, load, output, vip_sampler
        self.clock, self.sleep = clock, sleep
        self.engine = StepEngine(output, clock)
        self.marks = Timeline()
        self.host = StruckHost(plan.host, stopper, host_ready, self.marks, settings.return_timeout,
                               undo_leftovers=undo_leftovers, clock=clock, sleep=sleep)
        self.vips = None  # a VipWatch on the survivors and the host's balancers, with a VIP
        self.vip_before: list = []
        self.interrupted = False
        self.interruption = None

    @property
    def survivor(self) -> str:
        return self.plan.survivors[0]

    # -- running -------------------------------------------------------------------------------------------
    def run(self) -> dict:
        self.marks["started"] = self.clock()
        self.output.line(f"== test.host-failover: Incus host {self.plan.host} ({', '.join(self.plan.instances)}) "
                         f"out by {self.host.stopper.describe('stop')}; survivor {self.survivor}")
        try:
            self.servers.start()
            if self.vip_sampler is not None:
                self.vips = VipWatch(self.vip_sampler, [*self.plan.survivors, *self.plan.balancers],
                                     self.settings.budget_seconds)
            self.engine.run_plan(self._plan())
        except KeyboardInterrupt as interruption:  # Ctrl-C, or SIGTERM/SIGHUP raised as one by the task
            self.interrupted, self.interruption = True, interruption
            self.output.line(f"interrupted ({interruption or 'SIGINT'}): bringing {self.plan.host} back before exiting")
        self._wind_down()
        return host_failover_report(self)

    def _plan(self) -> list:
        plan = [PlannedStep(STEP_PREFLIGHT, self._preflight, abort_on_failure=True),
                PlannedStep(STEP_LOAD, self._load_flowing, abort_on_failure=True),
                PlannedStep(STEP_STRIKE, self.host.strike, abort_on_failure=True)]
        plan += [PlannedStep(f"3 DOWN {server.label}", lambda s=server: self._down(s)) for server in self.plan.servers]
        if self.vip_sampler is not None:
            plan.append(PlannedStep(STEP_VIP, self._vip_on_survivor))
        plan += [PlannedStep(STEP_CARRY, self._carry),
                 PlannedStep(STEP_BACK, self._bring_back, abort_on_failure=True)]
        plan += [PlannedStep(f"7 UP {server.label}", lambda s=server: self._up(s)) for server in self.plan.servers]
        plan.append(PlannedStep(STEP_SETTLE, self._settle))
        return plan

    def _preflight(self):
        self.host.converge(self.output)
        ready, detail = self.host.probe()
        if not ready:
            raise StepFailed(f"{self.plan.host} not ready: {detail}; nothing was touched")
        if not wait_for(lambda: self.servers.all(is_up), 15.0, interval=0.1, clock=self.clock, sleep=self.sleep):
            states = ", ".join(f"{s.label} {self.servers.status(s) or 'unread'}" for s in self.plan.servers)
            raise StepFailed(f"on {self.survivor} not every server on {self.plan.host} is UP ({states}); "
                             "nothing was touched")
        detail = f"{self.plan.host}: {detail}; on {self.survivor}: " + \
            ", ".join(f"{s.label} UP" for s in self.plan.servers)
        if self.vips is not None:
            held = wait_for(self.vips.all_sampled, 5.0, clock=self.clock, sleep=self.sleep)
            self.vip_before = self.vips.holders()
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

    def _first(self, server, wanted, since: float, timeout: float, interval: float, shown_from: float):
        """When ``server`` first reached a status ``wanted`` accepts since ``since`` (waiting up to
        ``timeout``), else None; and its states from ``shown_from`` on."""
        wait_for(lambda: first_at(self.servers.changes[server], wanted, since) is not None, max(0.0, timeout),
                 interval=interval, clock=self.clock, sleep=self.sleep)
        changes = self.servers.changes[server]
        return first_at(changes, wanted, since), path([c for c in changes if c[0] >= shown_from], self.marks.rel)

    def _down(self, server):
        s, t0 = self.settings, self.marks["t0"]
        down, states = self._first(server, is_down, t0, t0 + s.down_budget + DOWN_GRACE - self.clock(), 0.05, t0 - 2)
        if down is None:
            raise StepFailed(f"not DOWN within {s.down_budget + DOWN_GRACE:g}s on {self.survivor}; states {states}")
        seconds = round(down - t0, 3)
        detail = f"DOWN {seconds:.2f}s after t0 (budget {s.down_budget:g}s) on {self.survivor}; states {states}"
        if seconds > s.down_budget:
            raise StepFailed(detail, {"down_seconds": seconds})
        return detail, {"down_seconds": seconds}

    def _vip_on_survivor(self):
        t0, budget = self.marks["t0"], self.settings.vip_budget
        held = wait_for(lambda: self.vips.holds(self.survivor), max(0.0, t0 + budget - self.clock()),
                        clock=self.clock, sleep=self.sleep)
        if held is None:
            raise StepFailed(f"{self.survivor} does not hold the VIP {budget:g}s after t0 "
                             f"(held before by {', '.join(self.vip_before) or 'nobody'})")
        samples = self.vips.samples(self.survivor)
        since = next((t for t, holds in samples if holds and t >= t0), held)
        if self.vip_before == [self.survivor] and all(holds for t, holds in samples if t >= t0 - 1):
            since = t0
        self.marks["vip_on_survivor"] = since
        seconds = round(since - t0, 3)
        how = "held it before and kept it" if since == t0 else f"took it {seconds:.2f}s after t0"
        return f"{self.survivor} {how}", {"vip_move_seconds": seconds}

    def _carry(self):
        all_down = last_first_at(self.servers.changes, self.plan.servers, is_down, self.marks["t0"])
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

    def _bring_back(self):
        try:
            back = self.host.bring_back()
        finally:
            if self.vips is not None:  # a stop ended the host's VIP samplers (a freeze or a cut only paused them)
                self.vips.resample_ended(self.plan.balancers)
        seconds = round(back - self.marks["start_issued"], 3)
        return f"{self.host.stopper.describe('start')}; {self.host.detail} {seconds:.2f}s later", \
            {"host_back_seconds": seconds}

    def _up(self, server):
        s, start = self.settings, self.marks["start_issued"]
        up, states = self._first(server, is_up, start, start + s.return_timeout + s.up_timeout - self.clock(), 0.1, start)
        if up is None:
            raise StepFailed(f"not UP again on {self.survivor}; states {states}")
        back = self.marks.get("host_back")
        data = {"up_seconds": round(up - start, 3),
                "up_after_host_back_seconds": round(up - back, 3) if back is not None else None}
        return f"UP {up - start:.2f}s after the start was issued; states {states}", data

    def _settle(self):
        all_up = last_first_at(self.servers.changes, self.plan.servers, is_up, self.marks.get("start_issued"))
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
            if self.host.out:
                self.engine.restore(STEP_RESTORE, self._restore,
                                    f"{self.plan.host} may still be out: run {self.host.stopper.describe('start')}")
        finally:
            self.marks["load_stopped"] = self.clock()
            if "load_started" in self.marks and not self.load.stop():
                self.output.line("warning: the load did not end in time; its last requests are not counted")
            self.servers.stop()
            if self.vips is not None:
                self.vips.stop()

    def _restore(self):
        self.host.bring_back()
        return f"{self.host.stopper.describe('start')}; {self.host.detail}"
