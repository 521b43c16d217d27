"""HAProxy's own view of a run: counter deltas from the runtime API (after minus before).

``runtime`` is anything with ``show_stat(include_aggregates=True)`` returning rows
that have ``.pool``, ``.server`` and ``.raw`` (every ``show stat`` CSV column):
``fabfile.haproxy_runtime.RuntimeAPI``, a fake in tests, or a
``fabfile.balancers.BalancerSet``, whose ``per_balancer`` rows are summed: with a
keepalived pair the traffic went through whichever balancer held the VIP. Reading
the counters is best effort: a run without them still has its own numbers, so a
failure becomes a note in the report, never an aborted run.
"""

from __future__ import annotations

# Retries and redispatches show failures HAProxy hid from the client; the rest are
# the errors it saw (connect, response, request) and the 5xx it answered with.
COUNTERS = ("stot", "wretr", "wredis", "econ", "eresp", "ereq", "hrsp_5xx", "hrsp_4xx", "dreq", "dresp")


def _as_int(text) -> int:
    text = str(text or "").strip()
    return int(text) if text.isdigit() else 0


def snapshot(runtime) -> dict:
    """``{"pool/server": {counter: value}}`` for every row (servers and FRONTEND/BACKEND aggregates),
    summed over the balancers of a BalancerSet."""
    if hasattr(runtime, "per_balancer"):
        tables = [rows for _, rows in runtime.per_balancer(include_aggregates=True)]
    else:
        tables = [runtime.show_stat(include_aggregates=True)]
    totals: dict = {}
    for rows in tables:
        for row in rows:
            values = totals.setdefault(f"{row.pool}/{row.server}", dict.fromkeys(COUNTERS, 0))
            for name in COUNTERS:
                values[name] += _as_int(row.raw.get(name))
    return totals


def read_or_note(runtime) -> tuple:
    """(snapshot, "") or (None, why it could not be read)."""
    if runtime is None:
        return None, "no runtime API given"
    try:
        return snapshot(runtime), ""
    except Exception as exc:  # noqa: BLE001 - counters are extra evidence, not a reason to fail the run
        return None, f"{type(exc).__name__}: {exc}"


def deltas(before: dict, after: dict) -> dict:
    """Per row, each counter's increase over the run; rows whose counters all stayed still are left out.

    A row missing before (a server added by a reload) counts from zero; a counter
    that went down (HAProxy restarted, counters reset) is reported as its new value.
    """
    changed = {}
    for row, values in after.items():
        start = before.get(row, {})
        increase = {}
        for name, value in values.items():
            previous = start.get(name, 0)
            increase[name] = value - previous if value >= previous else value
        if any(increase.values()):
            changed[row] = increase
    return dict(sorted(changed.items()))


def counters_section(before, after, note: str) -> dict:
    """The report's ``haproxy`` section."""
    if before is None or after is None:
        return {"available": False, "note": note}
    changed = deltas(before, after)
    servers = {row: values for row, values in changed.items() if not row.endswith(("/FRONTEND", "/BACKEND"))}
    return {
        "available": True,
        "deltas": changed,
        "retries": sum(values["wretr"] for values in servers.values()),
        "redispatches": sum(values["wredis"] for values in servers.values()),
    }
