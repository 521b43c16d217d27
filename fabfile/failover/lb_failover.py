"""test.lb-failover: kill the balancer holding the VIP, prove the other one takes it and clients barely notice.

    0 pre-flight   exactly one VIP holder; keepalived and haproxy active on both balancers
    1 websocket    a session through the VIP, pinned to a backend by its SERVERID cookie
    2 kill (t0)    the holder dies: ``incus stop --force`` of its container, or SIGKILL of
                   haproxy then ``systemctl stop`` (so Restart= does not revive it)
    3 move         the peer holds the VIP (sampled every 100 ms on both nodes) and answers on it
    4 websocket    the session was closed at the kill; a reconnect with the old cookie lands
                   on the same backend (stickiness survives a balancer failover)
    5 return       the killed node is brought back; within the watch window the VIP moves back
                   at most once (zero times with preemption off)
    throughout     continuous GETs through the VIP counted per phase and per client kind (a share on
                   kept-alive connections: at most one failure per open connection); a client that
                   retries once after 250 ms; a browser-like keep-alive client that retries a broken
                   GET once on a fresh connection; every VIP sample with two holders, or none after
                   the move, fails the run

Whatever happens the killed node is started again before ``run`` returns. It is a configuration of
``engine``: its steps are ``StepOutcome``s of a ``StepEngine``, its waits ``engine.wait_for``
(``polling.wait_until``), its marks a ``Timeline`` (report times relative to t0), its samples and the
report's common part ``engine.common_report`` (``lb_report.py``); its stoppers live in ``stoppers.py`` and its VIP
samplers in ``vip_watch.py``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from .engine import StepEngine, Timeline, wait_for
from .lb_report import RETRY_AFTER, lb_failover_report
from .vip_watch import VipSampler, VipWatch



@dataclass
class LbFailoverSettings:
    method: str  # incus | process
    vip: str
    port: int
    health_path: str
    ws_path: str
    cookie_name: str
    interface: str
    preempt: bool
    preempt_delay: float
    advert_interval: float
    move_timeout: float = 15.0  # seconds for the peer to hold the VIP after t0
    dwell: float = 3.0  # seconds the node stays dead after the move
    return_timeout: float = 90.0  # seconds for the node to come back (a container boot)
    watch_after_return: float = 8.0  # seconds watched for flapping once the node is back (plus preempt_delay)
    load_rate: float = 20.0
    request_timeout: float = 2.0
    retry_rate: float = 5.0


class RetryingClient:
    """GETs at ``rate``/s on new connections; a failed one is retried once after 250 ms."""

    def __init__(self, fetch, rate: float, timeout: float, max_seconds: float, clock=time.monotonic,
                 sleep=time.sleep):
        self.fetch, self.rate, self.timeout, self.max_seconds = fetch, rate, timeout, max_seconds
        self.clock, self.sleep = clock, sleep
        self.results: list = []  # (t, "ok" | "retried-ok" | "failed")
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retrying-client", daemon=True)

    def _attempt(self) -> bool:
        try:
            return self.fetch(self.timeout).status == 200
        except OSError:
            return False

    def _run(self) -> None:
        deadline = self.clock() + self.max_seconds
        for _ in range(int(self.max_seconds * self.rate) + 1):
            if self._stopping.is_set() or self.clock() >= deadline:
                return
            t = self.clock()
            if self._attempt():
                self.results.append((t, "ok"))
            else:
                self.sleep(RETRY_AFTER)
                self.results.append((t, "retried-ok" if self._attempt() else "failed"))
            self.sleep(max(0.0, t + 1.0 / self.rate - self.clock()))

    def start(self) -> RetryingClient:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=2 * self.timeout + RETRY_AFTER + 2)


@dataclass
class LbFailoverRun:
    """The sequence against injected pieces (see ``tasks/test/lb_failover.py``)."""

    settings: LbFailoverSettings
    holder: str
    peer: str
    sampler_argv: object  # node -> argv of the sampler loop (seconds) -> list
    stopper: object  # stop(), start(), describe(action)
    node_ready: object  # () -> bool: the killed node is back (keepalived and haproxy active)
    load: object  # MixedLoad through the VIP (new-connection and kept-alive requests)
    retrying: object  # RetryingClient
    browser: object  # KeepAliveLoad with retry_idempotent: the browser's rule on kept-alive connections
    open_ws: object  # (cookie) -> WsSession
    fetch_ok: object  # () -> bool: one GET through the VIP answered 200
    output: object
    clock: object = time.monotonic
    sleep: object = time.sleep
    marks: Timeline = field(default_factory=Timeline)  # clock times; the report's are relative to t0
    websocket: dict = field(default_factory=dict)
    alerts: object = None  # a monitoring.gate.AlertGate (or None): the killed balancer's alert in Alertmanager

    def __post_init__(self):
        self.engine = StepEngine(self.output, self.clock)

    @property
    def steps(self) -> list:
        return self.engine.steps

    def _alert_step(self, name, check) -> bool:
        """One of the alert gate's checks as an engine step (its latencies land in the step's data)."""
        return self.engine.step(name, lambda: self.alerts.as_step(check()))

    def _step(self, name, passed, detail, started):
        return self.engine.check(name, passed, detail, started)

    def _sampler(self, node: str, seconds: float) -> VipSampler:
        return VipSampler(node, self.sampler_argv(node, seconds), self.settings.vip, self.clock).start()

    def run(self) -> dict:
        s = self.settings
        budget = s.move_timeout + s.dwell + s.return_timeout + s.watch_after_return + s.preempt_delay + 30
        vips = VipWatch(self._sampler, [self.holder, self.peer], budget)
        killed = False
        try:
            self.marks["started"] = self.clock()
            self.load.start()
            self.retrying.start()
            self.browser.start()
            self.sleep(2.0)
            self.marks["load_flowing"] = self.clock()
            started = self.clock()
            session, pinned = None, None
            try:
                session = self.open_ws(None)
                pinned = session.greeting.get("instance")
                cookie = session.cookie(s.cookie_name)
                self.websocket = {"pinned_to": pinned, "cookie": cookie}
                self._step("websocket pinned", pinned and cookie, f"session on {pinned}, cookie {s.cookie_name}={cookie}",
                           started)
            except Exception as exc:  # noqa: BLE001 - any failure to open is the step failing
                self._step("websocket pinned", False, f"could not open a session through the VIP: {exc}", started)
            if self.alerts is not None:
                self.alerts.marks = self.marks
                self._alert_step("alert not firing", self.alerts.quiet)
            started = self.clock()
            self.marks["kill_issued"] = started
            killed = True
            self.stopper.stop()
            # t0: the SIGKILL's own time when the stopper knows it (process), else the stop's return
            # (incus stop --force returns once the container is gone).
            self.marks["stop_returned"] = self.clock()
            self.marks["t0"] = getattr(self.stopper, "killed_at", None) or self.marks["stop_returned"]
            self._step("kill", True, f"{self.stopper.describe('stop')} (t0 {self.marks['t0'] - started:+.2f}s "
                       "after issuing)", started)
            moved = self._wait(lambda: vips.holds(self.peer), s.move_timeout)
            self.marks["vip_on_peer"] = moved
            answered = self._wait(self.fetch_ok, s.move_timeout) if moved else None
            self.marks["peer_answers"] = answered
            t0 = self.marks["t0"]
            self._step("vip moved", moved is not None,
                       f"{self.peer} holds {s.vip} {moved - t0:.2f}s after t0" if moved else
                       f"{self.peer} did not take {s.vip} within {s.move_timeout:g}s", t0)
            if session is not None:
                started = self.clock()
                closed = session.wait_closed(3.0)
                self.websocket["closed_at_kill"] = closed
                session.close()
                self._step("websocket closed", closed is not None, f"closed: {closed}" if closed else
                           "still open 3 s after the move", started)
                started = self.clock()
                try:
                    again = self.open_ws(f"{s.cookie_name}={self.websocket['cookie']}")
                    landed = again.greeting.get("instance")
                    again.close()
                except Exception as exc:  # noqa: BLE001
                    landed = f"error: {exc}"
                self.websocket["reconnected_to"] = landed
                self._step("websocket sticky", landed == pinned, f"reconnect with the old cookie landed on {landed} "
                           f"(was {pinned})", started)
            if self.alerts is not None and self._passed("alert not firing"):
                self._alert_step("alert fired", lambda: self.alerts.wait_fired(self.marks["t0"]))
            self.sleep(s.dwell)
        finally:
            if killed:
                self._bring_back(vips)
            self.load.stop()
            self.retrying.stop()
            self.browser.stop()
            vips.stop()
        return lb_failover_report(self, vips)

    def _bring_back(self, vips):
        s = self.settings
        started = self.clock()
        self.marks["start_issued"] = started
        try:
            self.stopper.start()
            back = self._wait(self.node_ready, s.return_timeout)
        except Exception as exc:  # noqa: BLE001 - reported as the step failing; the run still ends cleanly
            back, detail = None, f"start failed: {exc}"
        else:
            detail = f"{self.holder} back (keepalived, haproxy active) {back - started:.2f}s after start" if back \
                else f"{self.holder} not back within {s.return_timeout:g}s"
        self.marks["returned"] = back
        vips.resample_ended([self.holder])  # a container kill ended its sampler
        self._step("node back", back is not None, detail, started)
        watch_from = self.clock()
        if self.alerts is not None and self._passed("alert fired") and back is not None:
            self._alert_step("alert resolved", lambda: self.alerts.wait_resolved(back))
        if self.alerts is not None and self.alerts.unwanted and self._passed("alert not firing"):
            self._alert_step("no VIP-holder alert", self.alerts.stayed_silent)
        self.sleep(max(0.0, s.watch_after_return + (s.preempt_delay if s.preempt else 0) - (self.clock() - watch_from)))
        self.marks["watch_end"] = self.clock()

    def _passed(self, name: str) -> bool:
        return self.engine.passed(name)

    def _wait(self, probe, timeout):
        """The clock time ``probe()`` first held within ``timeout`` (polling every 50 ms), else None."""
        return wait_for(probe, timeout, interval=0.05, clock=self.clock, sleep=self.sleep)
