"""inv test.load: open-model load through the inventory's HAProxy, with thresholds, a baseline and a report.

One module of the ``test`` collection. Exit codes follow k6: 0 every threshold held, 99 a
threshold was breached, 2 bad input (nothing sent), 1 no request got an answer at all,
130 interrupted.
"""

from __future__ import annotations

import sys

from invoke.exceptions import Exit

from ... import exits
from ...loadtest import LoadTestError
from ...services import BACKEND_API as API
from ...values import flag_number
from .. import support as cli
from ..support import task

EXIT_BREACHED = exits.THRESHOLD_BREACHED  # k6's code for a crossed threshold
EXIT_UNREACHED = exits.FAILED

LOAD_HELP = {
    "scenario": "api (GET the health endpoint), hls (GET /hls/<track>/<segment>), ws (pinned WebSocket echoes); "
                "comma-separated runs them together (default api)",
    "rate": "requests per second per HTTP scenario, sent on schedule whatever the answers (default 100); "
            "with --ramp the first step's rate",
    "duration": "seconds of load (default 10, at most 3600)",
    "timeout": "seconds a request may take before it counts as a timeout (default 2)",
    "ramp": "find the knee: steps of --ramp-step-seconds from --rate times --ramp-factor up to --ramp-max, stopping at "
            "the first step with an error or p99 over --ramp-p99-ms, within --ramp-budget seconds",
    "ramp_factor": "rate multiplier between ramp steps (default 1.5)",
    "ramp_max": "highest ramp rate in requests/s (default 5000)",
    "ramp_step_seconds": "seconds per ramp step (default 5)",
    "ramp_p99_ms": "p99 bound in ms a ramp step must stay under (default 50)",
    "ramp_budget": "seconds the whole ramp may take (default 120)",
    "threshold": "pass/fail rule, repeatable: p99<50ms, p90<=20ms, errors<0.1%, rate>=100, hls:p99<20ms, "
                 "p99_ratio<1.2 (with --baseline); exit 99 when one is breached",
    "baseline": "an earlier --report JSON: print p99 and throughput ratios against it",
    "report": "write the run as JSON (kind veza-load-report, version 1; usable as a later --baseline)",
    "plot": "write an SVG of p50/p99 latency, achieved rate and errors per second",
    "inventory": cli.COMMON_HELP["inventory"],
    "target": "http://HOST:PORT to load instead of the inventory's balancer (HAProxy counters are then not read)",
    "tracks": "HLS tracks the hls scenario cycles through (default 16)",
    "ws_sessions": "WebSocket sessions of the ws scenario, pinned in turn to each API backend (default 4)",
    "max_in_flight": "cap on open requests; one due while it is full counts as dropped (default rate x timeout)",
    "keepalive_share": "share of each HTTP scenario's rate sent on persistent connections, counted apart from the "
                       "new-connection requests (default 0.5; 0: a new connection per request, 1: all kept alive)",
    "keepalive_connections": "persistent connections the keep-alive share uses (default 8, at most 64)",
    "counters": "read HAProxy's retry/redispatch/error counters before and after through the runtime API "
                "(default; --no-counters skips it)",
}


def _target(c, inventory: str | None, target: str | None) -> tuple:
    """(base URL, inventory-derived settings, every balancer's runtime API or None) for the run."""
    if target:
        return target.rstrip("/"), {}, None
    from ...roles import haproxy_vars

    loaded, api_hosts = cli.select(c, inventory, API.group, None)
    topology = cli.topology(loaded)
    balancer = topology.balancers[0]
    address = topology.client_address()  # the VIP when the inventory has a pair
    lb_vars = balancer.vars_with(haproxy_vars.DEFAULTS)
    api_path = API.settings(api_hosts[0].vars_with(API.defaults)).health_path if api_hosts else lb_vars["haproxy_health_path"]
    derived = {
        "api_path": api_path, "ws_path": lb_vars["haproxy_api_ws_path"], "hls_prefix": lb_vars["haproxy_stream_path_prefix"],
        "cookie_name": lb_vars["haproxy_cookie_name"],
        # HAProxy's cookie value is the server name, which is the inventory host name.
        "backends": [host.name for host in api_hosts],
    }
    # With a pair, the traffic goes wherever the VIP is: count on every balancer.
    return f"http://{address}:{int(lb_vars['haproxy_http_port'])}", derived, topology.runtime()


@task(help=LOAD_HELP, iterable=["threshold"], auto_shortflags=False)
@cli.user_errors
def load(c, scenario="api", rate="100", duration="10", timeout="2", ramp=False, ramp_factor="1.5", ramp_max="5000",
         ramp_step_seconds="5", ramp_p99_ms="50", ramp_budget="120", threshold=None, baseline=None, report=None,
         plot=None, inventory=None, target=None, tracks="16", ws_sessions="4", max_in_flight="0",
         keepalive_share="0.5", keepalive_connections="8", counters=True):
    """Constant-arrival-rate load through HAProxy: latency percentiles, errors by class, per-backend split.

    Latency counts from each request's intended send time (no coordinated
    omission). Prints one PASS/FAIL line per --threshold. Exit 0 when all hold,
    99 when one is breached, 1 when no request got an answer, 2 on bad input.
    """
    from ...loadtest.baseline import comparison_lines, load_baseline
    from ...loadtest.engine import LoadSettings, RampSettings, run_fixed, run_ramp, validate
    from ...loadtest.report import finish, summary_lines
    from ...loadtest.thresholds import needs_baseline, parse_all

    try:
        thresholds = parse_all(threshold)
        earlier = load_baseline(baseline) if baseline else None
        if needs_baseline(thresholds) and earlier is None:
            raise LoadTestError("p99_ratio/rate_ratio thresholds need --baseline")
        ramp_settings = RampSettings(
            flag_number("ramp-factor", ramp_factor), flag_number("ramp-max", ramp_max), flag_number("ramp-step-seconds", ramp_step_seconds),
            flag_number("ramp-p99-ms", ramp_p99_ms), flag_number("ramp-budget", ramp_budget), start=flag_number("rate", rate),
        ) if ramp else None
        # Every flag parsed before the inventory is read or a balancer asked anything.
        numbers = (flag_number("rate", rate), flag_number("duration", duration), flag_number("timeout", timeout),
                   int(flag_number("max-in-flight", max_in_flight)) or None, flag_number("keepalive-share", keepalive_share),
                   int(flag_number("keepalive-connections", keepalive_connections)))
        counts = dict(tracks=int(flag_number("tracks", tracks)), ws_sessions=int(flag_number("ws-sessions", ws_sessions)))
        base_url, derived, balancers = _target(c, inventory, target)
        settings = LoadSettings(base_url, tuple(s.strip() for s in str(scenario).split(",") if s.strip()),
                                *numbers, **counts, **derived)
        validate(settings, ramp_settings)
    except LoadTestError as exc:
        raise cli.UsageError(str(exc)) from None
    runtime = balancers if counters else None
    what = f"ramp from {settings.rate:g}/s" if ramp_settings else f"{settings.rate:g}/s for {settings.duration:g}s"
    print(f"== test.load: {', '.join(settings.scenarios)} against {base_url}, {what}", flush=True)
    try:
        result = run_ramp(settings, ramp_settings, runtime) if ramp_settings else run_fixed(settings, runtime)
    except KeyboardInterrupt as interruption:
        print(f"interrupted ({interruption or 'SIGINT'}): nothing written", file=sys.stderr)
        raise Exit(code=cli.exit_code_of(interruption)) from None
    verdicts = finish(result, thresholds, earlier)
    for line in summary_lines(result) + comparison_lines(result.get("baseline", {})):
        print(line)
    for verdict in verdicts:
        print(verdict.line())
    _write_outputs(result, report, plot)
    if not result["reached"]:
        print(f"error: no request got an answer from {base_url}", file=sys.stderr)
        raise Exit(code=EXIT_UNREACHED)
    if not result["passed"]:
        raise Exit(code=EXIT_BREACHED)


def _write_outputs(result: dict, report: str | None, plot: str | None) -> None:
    from ...loadtest.report import write_report, write_svg

    try:
        if report:
            write_report(report, result)
            print(f"report: {report}")
        if plot:
            write_svg(plot, result)
            print(f"plot: {plot}")
    except OSError as exc:
        print(f"error: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        raise Exit(code=1) from None
