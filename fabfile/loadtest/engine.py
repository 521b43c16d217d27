"""Runs: a fixed rate for a duration, or a ramp that finds the knee; plus the generator self-check.

``run_fixed`` and ``run_ramp`` are synchronous (each owns one ``asyncio.run``)
and return the report dict (see report.py for its shape). Thresholds and the
baseline are applied afterwards by ``report.finish``.
"""

from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import asdict, dataclass, field

from . import REPORT_KIND, REPORT_VERSION, SCENARIOS, LoadTestError
from .counters import counters_section, read_or_note
from .http_load import ApiScenario, HlsScenario, HttpTarget, open_session
from .keepalive import JOIN_GRACE, MAX_CONNECTIONS, KeepAliveLoad, KindCounts
from .schedule import Schedule, default_in_flight, run_open_loop
from .stats import ScenarioStats
from .ws_load import WsScenario

MAX_DURATION = 3600.0  # seconds: per-second histograms stay under ~80 MB
MAX_RATE = 50_000.0  # far above what one Python process can send; a typo guard
GENERATOR_CPU_LIMIT = 0.8  # share of one core: above it the generator itself may be the bottleneck
GENERATOR_LAG_LIMIT_MS = 10.0  # p99 of how late sends left; above it the schedule was not kept
DISCOVERY_REQUESTS = 20


@dataclass
class LoadSettings:
    """One run's target and shape (the task's flags, checked by ``validate``)."""

    base_url: str  # http://host:port of the balancer
    scenarios: tuple = ("api",)
    rate: float = 100.0  # requests per second, per HTTP scenario
    duration: float = 10.0
    timeout: float = 2.0
    max_in_flight: int | None = None  # None: rate x timeout (see schedule.py)
    # The share of each HTTP scenario's rate sent on persistent connections (keepalive.py, counted
    # apart as "keepalive"); the rest opens a new connection per request (aiohttp, "new").
    keepalive_share: float = 0.5
    keepalive_connections: int = 8
    api_path: str = "/api/v1/health"
    hls_prefix: str = "/hls/"
    tracks: int = 16
    ws_path: str = "/api/v1/ws"
    ws_sessions: int = 4
    ws_interval: float = 1.0
    backends: list = field(default_factory=list)  # SERVERID values for ws pinning; empty: discovered
    cookie_name: str = "SERVERID"


@dataclass
class RampSettings:
    """Geometric steps ``start, start*factor, ...`` of ``step_seconds`` each, up to ``max_rate``.

    A step passes with no error (dropped requests are errors) and p99 <= ``p99_ms``.
    The knee is the last passing rate; the ramp stops at the first failing step, at
    ``max_rate``, or when ``budget_seconds`` would be exceeded.
    """

    factor: float = 1.5
    max_rate: float = 5000.0
    step_seconds: float = 5.0
    p99_ms: float = 50.0
    budget_seconds: float = 120.0
    start: float = 50.0


def validate(settings: LoadSettings, ramp: RampSettings | None = None) -> None:
    """LoadTestError (one line) for settings that cannot make a run."""
    unknown = [name for name in settings.scenarios if name not in SCENARIOS]
    if unknown or not settings.scenarios:
        raise LoadTestError(f"scenario {','.join(unknown) or '(none)'}: use one or more of {', '.join(SCENARIOS)}")
    if not settings.base_url.startswith(("http://", "https://")):
        raise LoadTestError(f"target {settings.base_url!r}: expected http://HOST:PORT")
    checks = [
        (0 < settings.rate <= MAX_RATE, f"--rate {settings.rate:g}: must be > 0 and <= {MAX_RATE:g} requests/s"),
        (0 < settings.duration <= MAX_DURATION, f"--duration {settings.duration:g}: must be > 0 and <= {MAX_DURATION:g} s"),
        (0 < settings.timeout <= 60, f"--timeout {settings.timeout:g}: must be > 0 and <= 60 s"),
        (settings.tracks >= 1, f"--tracks {settings.tracks}: must be >= 1"),
        (settings.ws_sessions >= 1, f"--ws-sessions {settings.ws_sessions}: must be >= 1"),
        (settings.max_in_flight is None or settings.max_in_flight >= 1, "--max-in-flight: must be >= 1"),
        (0 <= settings.keepalive_share <= 1, f"--keepalive-share {settings.keepalive_share:g}: must be between 0 and 1"),
        (1 <= settings.keepalive_connections <= MAX_CONNECTIONS,
         f"--keepalive-connections {settings.keepalive_connections}: must be 1 to {MAX_CONNECTIONS}"),
        (not settings.keepalive_share or settings.base_url.startswith("http://"),
         "the keep-alive client speaks plain HTTP: use an http:// target or --keepalive-share 0"),
    ]
    if ramp is not None:
        checks += [
            (not set(settings.scenarios) - {"api", "hls"} and len(settings.scenarios) == 1,
             "--ramp drives one HTTP scenario: --scenario api or --scenario hls"),
            (ramp.factor > 1, f"--ramp-factor {ramp.factor:g}: must be > 1"),
            (0 < ramp.start <= ramp.max_rate <= MAX_RATE, f"ramp rates: need 0 < start <= max <= {MAX_RATE:g}"),
            (0 < ramp.step_seconds <= ramp.budget_seconds, "ramp: need 0 < step seconds <= budget seconds"),
        ]
    for ok, message in checks:
        if not ok:
            raise LoadTestError(message)


class SelfCheck:
    """The generator's own CPU time and wall time over a run (is it the bottleneck?)."""

    def __enter__(self):
        self.wall0, self.cpu0, self.usage0 = time.monotonic(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
        return self

    def __exit__(self, *exc_info):
        self.wall = time.monotonic() - self.wall0
        self.cpu = time.process_time() - self.cpu0
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.user, self.system = usage.ru_utime - self.usage0.ru_utime, usage.ru_stime - self.usage0.ru_stime

    def section(self, lag_p99_ms: float | None, lag_max_ms: float | None) -> dict:
        share = self.cpu / self.wall if self.wall > 0 else 0.0
        notes = []
        if share > GENERATOR_CPU_LIMIT:
            notes.append(f"generator used {share:.0%} of a core (limit {GENERATOR_CPU_LIMIT:.0%}): it may be the bottleneck")
        if lag_p99_ms is not None and lag_p99_ms > GENERATOR_LAG_LIMIT_MS:
            notes.append(f"sends left up to {lag_p99_ms:.1f} ms late at p99 (limit {GENERATOR_LAG_LIMIT_MS:g} ms)")
        return {"cpu_seconds": round(self.cpu, 3), "user_seconds": round(self.user, 3),
                "system_seconds": round(self.system, 3), "wall_seconds": round(self.wall, 3),
                "cpu_share": round(share, 3), "lag_p99_ms": lag_p99_ms, "lag_max_ms": lag_max_ms,
                "ok": not notes, "notes": notes}


def _http_scenario(name: str, settings: LoadSettings):
    return ApiScenario(settings.api_path) if name == "api" else HlsScenario(settings.tracks, settings.hls_prefix)


async def _run_http(scenario, settings: LoadSettings, rate: float, duration: float, should_stop) -> tuple:
    """One HTTP scenario at ``rate`` for ``duration``: (stats, its report section). ``keepalive_share``
    of the rate goes on persistent connections (threads of keepalive.py), the rest on new connections."""
    target = HttpTarget(settings.base_url, settings.cookie_name)
    keepalive_rate = rate * settings.keepalive_share
    new_rate = rate - keepalive_rate
    cap = settings.max_in_flight or default_in_flight(max(new_rate, 1.0), settings.timeout)
    started = time.monotonic()
    stats = ScenarioStats(scenario.name, t0=started)
    kinds = KindCounts()

    def record(sample):
        stats.record(sample)
        scenario.observe(sample)
        kinds.add(sample)

    keepalive = None
    if keepalive_rate > 0:
        keepalive = KeepAliveLoad(settings.base_url, settings.api_path, rate=keepalive_rate,
                                  connections=settings.keepalive_connections, timeout=settings.timeout,
                                  max_seconds=duration, request_of=scenario.request)
        keepalive.start(at=started)
    result = None
    if new_rate > 0:
        schedule = Schedule(new_rate, duration, cap, drain_timeout=settings.timeout + 1.0)
        async with open_session(max_in_flight=cap, timeout=settings.timeout) as session:
            async def send(index: int, due: float):
                path, key = scenario.request(index)
                return await target.request(session, path, due, key=key)

            result = await run_open_loop(send, schedule, record, should_stop=should_stop, started=started)
    if keepalive is not None:
        await _join_keepalive(keepalive, duration + 2 * settings.timeout + JOIN_GRACE, should_stop)
        for sample in list(keepalive.samples):  # recorded here, in the loop's thread: stats are not shared
            record(sample)
    send_seconds = result.send_seconds if result else duration
    sent = (result.sent if result else 0) + (len(keepalive.samples) if keepalive else 0)
    wall = max(send_seconds + 1 / rate, stats.last_completion - started)
    section = stats.summary(wall) | scenario.report() | {
        "target_rate": rate, "duration_seconds": round(wall, 3), "sent": sent,
        "offered_rps": round(sent / max(send_seconds, 1 / rate), 2),
        "in_flight_cap": cap, "cancelled_at_end": result.cancelled if result else 0,
        "stopped_early": bool(result and result.stopped_early),
        "keepalive": {"share": settings.keepalive_share, "connections": settings.keepalive_connections if keepalive else 0,
                      "connections_opened": keepalive.connections_opened if keepalive else 0},
        "by_kind": kinds.to_dict(),
    }
    return stats, section


async def _join_keepalive(keepalive, bound: float, should_stop) -> None:
    """Wait for the keep-alive threads without blocking the loop (other scenarios run on it); stop
    them when the run is asked to stop. Bounded by ``bound`` seconds."""
    deadline = time.monotonic() + bound
    while not keepalive.wait(0) and time.monotonic() < deadline:
        if should_stop():
            keepalive.stop()
            return
        await asyncio.sleep(0.05)


async def discover_backends(settings: LoadSettings) -> list:
    """The backends' names as seen through the balancer (from up to DISCOVERY_REQUESTS health GETs)."""
    target = HttpTarget(settings.base_url, settings.cookie_name)
    seen = []
    async with open_session(max_in_flight=4, timeout=settings.timeout) as session:
        for _ in range(DISCOVERY_REQUESTS):
            sample = await target.request(session, settings.api_path, time.monotonic())
            if sample.instance and sample.instance not in seen:
                seen.append(sample.instance)
    return seen


async def _run_ws(settings: LoadSettings, duration: float, should_stop) -> tuple:
    backends = list(settings.backends) or await discover_backends(settings)
    stats = ScenarioStats("ws", t0=time.monotonic())
    if not backends:
        return stats, stats.summary(duration) | {"note": "no backend found to pin sessions to"}
    url = "ws" + settings.base_url[len("http"):] + settings.ws_path
    scenario = WsScenario(url, backends, settings.ws_sessions, settings.ws_interval, settings.timeout,
                          settings.cookie_name)
    await scenario.run(duration, stats.record, should_stop)
    return stats, stats.summary(max(duration, stats.last_completion - stats.t0)) | scenario.report() | {"backends": backends}


def _preload(settings: LoadSettings) -> None:
    """Import the network libraries before the clock starts: an import inside the loop delays sends."""
    import aiohttp  # noqa: F401
    import hdrh.histogram  # noqa: F401

    if "ws" in settings.scenarios:
        import websockets.asyncio.client  # noqa: F401


async def _run_all(settings: LoadSettings, rate: float, duration: float, should_stop) -> dict:
    """Every scenario of ``settings`` at once: {name: (stats, section)}."""
    runs = {}
    for name in settings.scenarios:
        runs[name] = (_run_ws(settings, duration, should_stop) if name == "ws" else
                      _run_http(_http_scenario(name, settings), settings, rate, duration, should_stop))
    results = await asyncio.gather(*runs.values())
    return dict(zip(runs, results))


def _lag(all_stats) -> tuple:
    """p99 and max scheduling lag over every scenario, in ms."""
    from .stats import latency_summary, new_histogram

    merged = new_histogram()
    for stats in all_stats:
        merged.add(stats.lag_histogram)
    summary = latency_summary(merged)
    return summary["p99"], summary["max"]


def _report(mode: str, settings: LoadSettings, scenarios: dict, check: SelfCheck, lag: tuple, haproxy: dict) -> dict:
    return {
        "kind": REPORT_KIND, "version": REPORT_VERSION, "mode": mode,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - check.wall)),
        "target": settings.base_url, "settings": asdict(settings),
        "scenarios": scenarios, "generator": check.section(*lag), "haproxy": haproxy,
        "reached": any(section["ok"] > 0 for section in scenarios.values()),
    }


def run_fixed(settings: LoadSettings, runtime=None, should_stop=lambda: False) -> dict:
    """Every scenario at ``settings.rate`` for ``settings.duration``; the report dict."""
    validate(settings)
    before, note = read_or_note(runtime)
    _preload(settings)
    with SelfCheck() as check:
        results = asyncio.run(_run_all(settings, settings.rate, settings.duration, should_stop))
    after, after_note = read_or_note(runtime) if before is not None else (None, note)
    scenarios = {name: section for name, (_, section) in results.items()}
    lag = _lag([stats for stats, _ in results.values()])
    return _report("fixed", settings, scenarios, check, lag, counters_section(before, after, after_note or note))


def _step_verdict(section: dict, ramp: RampSettings) -> str:
    """Why a ramp step fails ("" when it passes), naming the generator when it was late too.

    Generator lateness alone does not fail a step: latency counts from the intended
    send time, so a generator that cannot keep up already shows in p99.
    """
    p99, lag = section["latency_ms"]["p99"], section["lag_ms"]["p99"]
    if section["error_count"]:
        reason = f"{section['error_count']} errors ({', '.join(f'{k} {v}' for k, v in section['errors'].items())})"
    elif p99 is None or p99 > ramp.p99_ms:
        reason = f"p99 {p99} ms > {ramp.p99_ms:g} ms"
    else:
        return ""
    if lag is not None and lag > GENERATOR_LAG_LIMIT_MS:
        reason += f"; the generator sent late too (lag p99 {lag} ms): this knee may be the generator's"
    return reason


def ramp_rates(ramp: RampSettings) -> list:
    """The step rates within max_rate and the time budget (the ramp never runs longer)."""
    rates = []
    rate = ramp.start
    for _ in range(max(1, int(ramp.budget_seconds // ramp.step_seconds))):
        if rate > ramp.max_rate * (1 + 1e-9):  # tolerance: 50 * 2**3 must count as 400
            break
        rates.append(round(rate, 2))
        rate *= ramp.factor
    return rates


def run_ramp(settings: LoadSettings, ramp: RampSettings, runtime=None, should_stop=lambda: False) -> dict:
    """Step the rate up until a step fails; the report's ``scenarios`` hold the knee's step."""
    validate(settings, ramp)
    before, note = read_or_note(runtime)
    _preload(settings)
    steps, knee, knee_section, first_section, all_stats = [], None, None, None, []
    with SelfCheck() as check:
        for rate in ramp_rates(ramp):
            if should_stop():
                break
            with SelfCheck() as step_check:  # per step: is the generator still far from a full core here?
                stats, section = asyncio.run(_run_all(settings, rate, ramp.step_seconds, should_stop))[settings.scenarios[0]]
            all_stats.append(stats)
            first_section = first_section or section
            reason = _step_verdict(section, ramp)
            steps.append({"rate": rate, "p99_ms": section["latency_ms"]["p99"], "errors": section["error_count"],
                          "throughput_rps": section["throughput_rps"], "passed": not reason, "reason": reason,
                          "generator_cpu_share": step_check.section(None, None)["cpu_share"],
                          "lag_p99_ms": section["lag_ms"]["p99"]})
            if reason:
                break
            knee, knee_section = rate, section
    after, after_note = read_or_note(runtime) if before is not None else (None, note)
    chosen = knee_section or first_section
    report = _report("ramp", settings, {settings.scenarios[0]: chosen}, check, _lag(all_stats),
                     counters_section(before, after, after_note or note))
    report["ramp"] = asdict(ramp) | {"knee_rps": knee, "steps": steps,
                                     "first_failing_rps": next((s["rate"] for s in steps if not s["passed"]), None)}
    return report
