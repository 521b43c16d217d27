"""What the ``test`` collection's gates share: the keep-alive flags' help, the wait guard, the background load,
the verdict and exit."""

from __future__ import annotations

from ... import values
from .. import support

MAX_WAIT_SECONDS = 3600  # a typo guard for the gates' waits, far above any real check interval

KEEPALIVE_HELP = {
    "keepalive_share": "share of the background load sent on persistent connections and counted apart from the "
                       "new-connection requests, by method and outcome (default 0.5; 0: new connections only)",
    "keepalive_connections": "persistent connections of that share (default 8, at most 64)",
}


def mixed_load(base_url: str, path: str, rate: float, share, connections, timeout: float, max_seconds: float,
               **extra):
    """The gates' background load from their flags: ``share`` of ``rate`` on ``connections`` kept-alive
    connections (``--keepalive-share``, ``--keepalive-connections``); a bad value is a usage error."""
    from ...loadtest import LoadTestError
    from ...loadtest.keepalive import MixedLoad

    try:
        return MixedLoad(base_url, path, rate=rate, keepalive_share=values.flag_number("keepalive-share", share),
                         connections=int(values.flag_number("keepalive-connections", connections)), timeout=timeout,
                         max_seconds=max_seconds, **extra)
    except LoadTestError as exc:
        raise support.UsageError(str(exc)) from None


def finish_gate(name: str, result: dict, report, plot, output, write_svg, interruption=None) -> None:
    """Write the gate's report and plot, print its verdict line, exit non-zero unless it passed. A gate that
    tracks interruptions passes the one that stopped it (None: not interrupted, or not tracked)."""
    from invoke.exceptions import Exit

    from ... import exits
    from ...failover.report import write_outputs

    write_outputs(result, report, plot, output, write_svg)
    marked = " (interrupted)" if interruption is not None and result["interrupted"] else ""
    output.line(f"-- test.{name}: {'PASSED' if result['passed'] else 'FAILED'}{marked}")
    if marked:
        raise Exit(code=support.exit_code_of(interruption))
    if not result["passed"]:
        raise Exit(code=exits.FAILED)
