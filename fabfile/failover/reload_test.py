"""test.reload: reload HAProxy on every balancer, again and again, under a mixed load; nothing may fail.

    0 pre-flight   haproxy active on every balancer, the load answered (both client kinds)
    1..N reloads   on each balancer in turn, the role's own reload (the ``reload haproxy`` handler
                   haproxy.setup runs: the unit saves server states, reloads, and a new worker must
                   appear), ``interval`` seconds apart
    drain          the old workers end: each one's lifetime after its reload is measured; a worker
                   still alive ``drain_timeout`` seconds after the last reload fails the run
    throughout     a MixedLoad through the VIP (or the balancer): new-connection requests and requests
                   on kept-alive connections, counted per reload window and per client kind; the
                   workers of every balancer sampled every ``sample_interval`` seconds

The pieces (load, reloaders, worker samplers) are injected (``tasks/test/reload.py``), so the sequence is
tested without a lab and can become one configuration of a shared step engine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .engine import StepEngine, Timeline
from .server_watch import PeriodicSampler

SAMPLE_INTERVAL = 0.5
# One line per sample: the node's epoch time, the master's PID, then its worker PIDs.
WORKERS_PROBE = ("m=$(systemctl show -p MainPID --value haproxy); "
                 "echo \"$(date +%s.%N) $m $(pgrep -P \"$m\" haproxy | tr '\\n' ' ')\"")

# The haproxy master's worker PIDs, one per line.
WORKER_PIDS = 'm=$(systemctl show -p MainPID --value haproxy); pgrep -P "$m" haproxy'


def worker_pids(transport) -> list:
    """The haproxy master's worker PIDs on a balancer, read through its transport."""
    return transport.run(WORKER_PIDS, warn=True, timeout=30).stdout.split()


@dataclass
class ReloadSettings:
    reloads: int = 5
    interval: float = 2.0  # seconds between two reloads (of any balancer)
    lead_in: float = 2.0  # seconds of load before the first reload
    drain_timeout: float = 30.0  # seconds after the last reload for every old worker to end
    sample_interval: float = SAMPLE_INTERVAL


class WorkerSampler(PeriodicSampler):
    """One balancer's haproxy workers, polled through its transport in a thread (bounded)."""

    def __init__(self, name: str, run, interval: float, max_seconds: float, clock=time.monotonic):
        super().__init__(f"workers-{name}", interval, max_seconds, clock)
        self.name, self.run = name, run
        self.samples: list = []  # (clock time, master PID, [worker PIDs])

    def tick(self) -> None:
        sample = self.sample()
        if sample is not None:
            self.samples.append(sample)

    def sample(self):
        """(now, master, workers) or None when the balancer did not answer."""
        try:
            out = self.run(WORKERS_PROBE)
        except Exception:  # noqa: BLE001 - a missed sample is a gap, not a failure
            return None
        parts = out.split()
        if len(parts) < 2:
            return None
        return self.clock(), parts[1], parts[2:]


def worker_lifetimes(samples: list, reloads: list) -> list:
    """For each reload of this balancer ({"t", "new_worker"}), the workers it retired: seen before the
    reload's end and gone later; when each was last seen (its lifetime after the reload is bounded
    by the sample interval). A worker never seen gone has ``ended`` None."""
    results = []
    last_seen: dict = {}
    for t, _, workers in samples:
        for pid in workers:
            last_seen[pid] = t
    final = samples[-1][2] if samples else []
    assigned = set()  # a worker retires once: a later reload may still see it finishing
    for reload in reloads:
        before = next((workers for t, _, workers in reversed(samples) if t <= reload["t"]), [])
        retired = [pid for pid in before if pid != reload.get("new_worker") and pid not in assigned]
        assigned.update(retired)
        entries = []
        for pid in retired:
            ended = None if pid in final else last_seen.get(pid)
            entries.append({"pid": pid, "last_seen_after_reload": None if ended is None else round(ended - reload["t"], 3),
                            "still_running": pid in final})
        results.append(entries)
    return results


@dataclass
class ReloadRun:
    """The sequence against injected pieces."""

    settings: ReloadSettings
    balancers: list  # names, in order
    reloaders: dict  # name -> () -> (ok, detail, new worker PID or None)
    samplers: dict  # name -> WorkerSampler
    load: object  # MixedLoad through the VIP
    output: object
    clock: object = time.monotonic
    sleep: object = time.sleep
    reloads: list = field(default_factory=list)  # {"n", "balancer", "t", "ok", "detail", "new_worker"}
    marks: Timeline = field(default_factory=Timeline)  # no single strike: report times are after the start

    def __post_init__(self):
        self.engine = StepEngine(self.output, self.clock)  # ``engine``: the failover gates' one step engine

    @property
    def steps(self) -> list:
        return self.engine.steps

    def _step(self, name, passed, detail, started):
        return self.engine.check(name, passed, detail, started)

    def run(self) -> dict:
        s = self.settings
        for sampler in self.samplers.values():
            sampler.start()
        try:
            self.marks["started"] = self.clock()
            self.load.start()
            self.sleep(s.lead_in)
            started = self.clock()
            flowing = list(self.load.samples)
            failed = [x for x in flowing if x.failed]
            kinds = {x.connection for x in flowing if not x.failed}
            if not self._step("load flowing", flowing and not failed,
                              f"{len(flowing)} requests in {s.lead_in:g}s ({', '.join(sorted(kinds)) or 'none'}), "
                              f"{len(failed)} failed", started):
                return self._verdict()
            for number in range(1, s.reloads + 1):
                for name in self.balancers:
                    started = self.clock()
                    ok, detail, new_worker = self.reloaders[name]()
                    entry = {"n": number, "balancer": name, "t": started, "ok": ok, "detail": detail,
                             "new_worker": new_worker, "seconds": round(self.clock() - started, 3)}
                    self.reloads.append(entry)
                    self._step(f"reload {number} {name}", ok, detail, started)
                    self.sleep(max(0.0, started + s.interval - self.clock()))
            self.marks["last_reload"] = self.clock()
            self._wait_old_workers()
        finally:
            self.marks["load_stopped"] = self.clock()
            self.load.stop()
            for sampler in self.samplers.values():
                sampler.stop()
        return self._verdict()

    def _old_workers(self) -> dict:
        """Per balancer: workers alive now that were there before its last reload."""
        alive = {}
        for name in self.balancers:
            last = [r for r in self.reloads if r["balancer"] == name]
            sample = self.samplers[name].sample()
            if not last or sample is None:
                continue
            alive[name] = [pid for pid in sample[2] if pid != last[-1]["new_worker"]]
        return alive

    def _wait_old_workers(self) -> None:
        started = self.clock()
        deadline = started + self.settings.drain_timeout
        remaining = self._old_workers()
        for _ in range(int(self.settings.drain_timeout / self.settings.sample_interval) + 1):
            if not any(remaining.values()) or self.clock() >= deadline:
                break
            self.sleep(self.settings.sample_interval)
            remaining = self._old_workers()
        self.marks["drained"] = self.clock()
        left = {name: pids for name, pids in remaining.items() if pids}
        self._step("old workers ended", not left,
                   "every old worker ended" if not left else
                   f"still running {self.settings.drain_timeout:g}s after the last reload: "
                   + ", ".join(f"{name} {' '.join(pids)}" for name, pids in left.items()), started)

    def _verdict(self) -> dict:
        from ..loadtest.facade import phase_counts
        from ..loadtest.keepalive import kind_counts

        samples = sorted(self.load.samples, key=lambda x: x.t)
        rel = self.marks.rel

        windows = [("before", self.marks.get("started"))] + \
            [(f"reload {r['n']} {r['balancer']}", r["t"]) for r in self.reloads]
        phases = phase_counts(samples, windows)
        started = self.clock()
        by_kind = kind_counts(samples)
        failed = sum(entry["failed"] for entry in by_kind.values())
        if self.reloads:
            self._step("no failed request", failed == 0,
                       f"{failed} of {len(samples)} failed; " + ", ".join(
                           f"{kind} {e['failed']}/{e['total']}" for kind, e in by_kind.items()), started)
        per_reload = []
        for name in self.balancers:
            mine = [r for r in self.reloads if r["balancer"] == name]
            lifetimes = worker_lifetimes(self.samplers[name].samples, mine)
            for reload, retired in zip(mine, lifetimes):
                window = phases.get(f"reload {reload['n']} {name}", {})
                per_reload.append({
                    "n": reload["n"], "balancer": name, "t": rel(reload["t"]), "ok": reload["ok"],
                    "detail": reload["detail"], "seconds": reload["seconds"], "new_worker": reload["new_worker"],
                    "requests": window.get("total", 0), "failed": window.get("failed", 0),
                    "by_kind": window.get("by_kind", {}), "old_workers": retired,
                })
        per_reload.sort(key=lambda r: r["t"])
        lifetimes = [w["last_seen_after_reload"] for r in per_reload for w in r["old_workers"]
                     if w["last_seen_after_reload"] is not None]
        workers = {name: [[rel(t), len(pids)] for t, _, pids in sampler.samples]
                   for name, sampler in self.samplers.items()}
        return {
            "passed": self.engine.all_passed,
            "balancers": self.balancers, "settings": self.settings.__dict__,
            "load": self.load.describe() if hasattr(self.load, "describe") else None,
            "steps": [step.to_dict() for step in self.steps],
            "timeline": self.marks.relative(),
            "reloads": per_reload,
            # One worker serves; every other one seen at the same time is an old one finishing.
            "old_workers": {"most_at_once": max([count - 1 for points in workers.values() for _, count in points] + [0]),
                            "longest_lifetime_seconds": max(lifetimes, default=None),
                            "sample_interval": self.settings.sample_interval},
            "workers_per_balancer": workers,
            "requests": {"total": len(samples), "failed": failed, "by_kind": by_kind, "phases": phases,
                         "samples": [{"t": rel(x.t), "kind": x.connection, "ok": not x.failed, "outcome": x.outcome,
                                      "method": x.method, "seconds": round(x.seconds, 4), "error": x.error}
                                     for x in samples]},
        }
