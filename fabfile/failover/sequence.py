"""The failover test: kill one API backend behind HAProxy, show clients do not notice, bring it back.

The seed's sequence, each step timed and reported:

    0 pre-flight   every server of the pool is UP per HAProxy's runtime API
    1 baseline     5 GET /api/v1/health through the LB, all 200
    2 stop         the victim dies (``incus stop --force``, or its unit is killed)
    3 DOWN         HAProxy marks the victim DOWN within --down-timeout
    4 down window  5 GET through the LB, all 200 and none from the victim
    5 recovery     the victim is started again and HAProxy marks it UP within --up-timeout

plus optional checks around them: HAProxy's Prometheus exporter showing the
victim UP before the stop and DOWN (with its UP->DOWN counter +1) within a
second of the runtime API, a WebSocket session pinned to the victim by
the SERVERID cookie (closed at the kill, rebalanced with a new cookie on
reconnect, still in place after recovery) and a continuous background load
whose failures are counted per phase (with the load on, the victim stays down
``down_dwell`` seconds after DOWN so the survivor carries traffic alone).

Whatever happens (a failed step, an exception, Ctrl-C) the victim is started
again and awaited before ``run`` returns. Every dependency (runtime API,
stopper, HTTP getter, WebSocket connector, load, exporter, clock) is injected, so the
sequence runs against fakes in unit tests. It is one configuration of ``engine.StepEngine``:
its collaborators (``PoolWatch``, ``LoadChecks``, ``WebSocketChecks``, ``MetricsChecks``) each own
their state and provide the steps' actions; ``report.failover_report`` builds the report.
"""

from __future__ import annotations

from __future__ import annotations

import time
from collections.abc import Callable

from .checks import (ALERT_STEPS, METRICS_STEPS, STEP_ALERT_FIRED, STEP_ALERT_QUIET, STEP_ALERT_RESOLVED,
                     STEP_BASELINE, STEP_DOWN, STEP_DOWN_WINDOW, STEP_LOAD_DOWN, STEP_LOAD_FLOWING, STEP_LOAD_TOTAL,
                     STEP_METRICS_BEFORE, STEP_METRICS_DOWN, STEP_PREFLIGHT, STEP_RECOVERY, STEP_RESTORE, STEP_STOP,
                     STEP_WS_CLOSED, STEP_WS_PINNED, STEP_WS_REBALANCED, STEP_WS_STAYS, WS_STEPS, FailoverSettings)
from .engine import PlannedStep, StepEngine, Timeline
from .load_checks import LoadChecks
from .metrics_checks import MetricsChecks
from .pool_watch import PoolWatch
from .report import failover_report
from .websocket_checks import WebSocketChecks


class FailoverTest:
    """One run of the sequence against injected dependencies; ``run()`` returns the report dict.

    ``runtime``: ``show_stat()`` -> ServerStat rows. ``stopper``: ``stop()``,
    ``start()``, ``describe(action)`` (``stoppers.py``). In real runs the clients are the load
    engine's (``fabfile/loadtest/facade.py``): ``http_get(path, headers, timeout)``
    -> a ``Reply`` through the LB (``fetch``); ``ws_connect(path, cookie)`` -> a
    ``WsSession`` (``open_session``); ``load``: a background load (or None);
    ``metrics``: the exporters (``metrics.ServerMetrics``, or None); ``alerts``: a
    ``monitoring.gate.AlertGate`` (or None); ``floor``: the pool's ``CapacityFloor``.
    """

    def __init__(self, settings: FailoverSettings, *, runtime, stopper, http_get: Callable,
                 ws_connect: Callable | None = None, load=None, metrics=None, output, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, alerts=None, floor=None):
        self.settings = settings
        self.stopper = stopper
        self.output = output
        self.clock = clock
        self.sleep = sleep
        self.marks = Timeline()  # clock times: started, load_started, stop_issued, t0, down, start_issued, up
        self.engine = StepEngine(output, clock)
        self.pool = PoolWatch(self, runtime, floor)
        self.load = LoadChecks(self, http_get, load if settings.load else None)
        self.websocket = WebSocketChecks(self, ws_connect)
        self.metrics = MetricsChecks(self, metrics)
        self.alerts = alerts
        if alerts is not None:
            alerts.marks = self.marks  # alert_fired, alert_resolved join the timeline
        self.interrupted = False
        self.interruption = None
        self._stop_issued = False
        self._victim_back = False

    @property
    def steps(self) -> list:
        return self.engine.steps

    @property
    def passed(self) -> bool:
        return not self.interrupted and self.engine.all_passed

    # -- running ----------------------------------------------------------------
    def run(self) -> dict:
        """The whole sequence, then always the wind-down; returns the report."""
        self.marks["started"] = self.clock()
        v = self.settings.victim
        self.output.line(f"== test.failover: victim {v} in {self.settings.pool}, stop by {self.stopper.describe('stop')}")
        try:
            self.engine.run_plan(self._plan())
        except KeyboardInterrupt as interruption:  # Ctrl-C, or SIGTERM/SIGHUP raised as one by the task
            self.interrupted = True
            self.interruption = interruption
            self.output.line(f"interrupted ({interruption or 'SIGINT'}): bringing the victim back before exiting")
        self._wind_down()
        return failover_report(self)

    def _plan(self) -> list:
        s, load, ws, metrics, alerts = self.settings, self.load, self.websocket, self.metrics, self.alerts
        plan = [
            PlannedStep(STEP_PREFLIGHT, self.pool.preflight, abort_on_failure=True),
            PlannedStep(STEP_BASELINE, load.baseline, abort_on_failure=True),
            PlannedStep(STEP_WS_PINNED, ws.pinned),
            PlannedStep(STEP_LOAD_FLOWING, load.flowing, abort_on_failure=True),
            PlannedStep(STEP_METRICS_BEFORE, metrics.before),
            PlannedStep(STEP_ALERT_QUIET, lambda: alerts.as_step(alerts.quiet())),
            PlannedStep(STEP_STOP, self._stop_victim, abort_on_failure=True),
            PlannedStep(STEP_DOWN, self._wait_down, abort_on_failure=True),
            PlannedStep(STEP_METRICS_DOWN, metrics.down, needs=STEP_METRICS_BEFORE),
            PlannedStep(STEP_WS_CLOSED, ws.closed, needs=STEP_WS_PINNED),
            PlannedStep(STEP_WS_REBALANCED, ws.rebalanced),
            PlannedStep(STEP_DOWN_WINDOW, load.down_window),
            PlannedStep(STEP_LOAD_DOWN, load.while_down),
            PlannedStep(STEP_ALERT_FIRED, lambda: alerts.as_step(alerts.wait_fired(self.marks["down"])),
                        needs=STEP_ALERT_QUIET),
            PlannedStep(STEP_RECOVERY, self._start_and_wait_up, abort_on_failure=True),
            PlannedStep(STEP_ALERT_RESOLVED, lambda: alerts.as_step(alerts.wait_resolved(self.marks["up"])),
                        needs=STEP_ALERT_FIRED),
            PlannedStep(STEP_WS_STAYS, ws.stays, needs=STEP_WS_REBALANCED),
        ]
        disabled = set(WS_STEPS if not (s.websocket and ws.ws_connect) else ())
        if load.load is None:
            disabled.update((STEP_LOAD_FLOWING, STEP_LOAD_DOWN))
        if metrics.metrics is None:
            disabled.update(METRICS_STEPS)
        if alerts is None:
            disabled.update(ALERT_STEPS)
        return [step for step in plan if step.name not in disabled]

    def _stop_victim(self):
        self.marks["stop_issued"] = self.clock()
        # Set before the call: if it fails half-way (or Ctrl-C) the victim may be down, so restore it.
        self._stop_issued = True
        self.stopper.stop()
        self.marks["t0"] = self.clock()
        seconds = self.marks["t0"] - self.marks["stop_issued"]
        return f"{self.stopper.describe('stop')} returned after {seconds:.2f}s (t0)", {"command_seconds": round(seconds, 3)}

    def _wait_down(self):
        waited = self.pool.wait_victim("DOWN", lambda stat: stat.is_down, self.settings.down_timeout)
        self.marks["down"] = self.clock()
        detect = self.marks["down"] - self.marks["t0"]
        # The target is judged from the moment the stop was issued: the victim may die early in the command.
        from_issue = self.marks["down"] - self.marks["stop_issued"]
        target = "met" if from_issue <= self.settings.down_target else "missed"
        detail = (f"DOWN {detect:.2f}s after t0, {from_issue:.2f}s after the stop was issued "
                  f"(target {self.settings.down_target:g}s {target}); "
                  f"check {waited.value.last_check or '-'}; states {self.pool.path('DOWN')}")
        return (detail, {"detect_down_seconds": round(detect, 3), "from_stop_issued_seconds": round(from_issue, 3)})

    def _start_and_wait_up(self):
        self.marks["start_issued"] = self.clock()
        self.stopper.start()
        self._victim_back = True  # started: from here on the wind-down need not start it again
        self.pool.wait_victim("UP", lambda stat: stat.is_up, self.settings.up_timeout)
        self.marks["up"] = self.clock()
        seconds = self.marks["up"] - self.marks["start_issued"]
        return f"{self.stopper.describe('start')}; UP {seconds:.2f}s later; states {self.pool.path('UP')}", \
            {"recover_up_seconds": round(seconds, 3)}

    # -- wind-down --------------------------------------------------------------------
    def _wind_down(self) -> None:
        """Victim back, load stopped and judged, sessions closed, final pool state shown."""
        try:
            if self._stop_issued and not self._victim_back:
                self.engine.restore(STEP_RESTORE, self._restore_victim, f"{self.settings.victim} may still be "
                                    f"stopped: run {self.stopper.describe('start')}")
        finally:
            self.load.stop()
        if self.load.load is not None and "load_started" in self.marks:
            self.engine.step(STEP_LOAD_TOTAL, self.load.total)
        self.websocket.close()
        self.pool.show_final()

    def _restore_victim(self):
        self.marks["start_issued"] = self.clock()
        self.stopper.start()
        self._victim_back = True
        self.pool.wait_victim("UP", lambda stat: stat.is_up, self.settings.up_timeout)
        self.marks["up"] = self.clock()
        return f"{self.stopper.describe('start')}; UP {self.marks['up'] - self.marks['start_issued']:.2f}s later"
