"""HAProxy's view of its servers, parsed once: rows of ``show stat``, what a status means, a pool view.

Pure: nothing here talks to a balancer. ``haproxy_runtime.RuntimeAPI`` reads the CSV and hands it to
``parse_show_stat``; every other module asks a ``ServerStat`` or a ``PoolView`` what a status means
instead of comparing strings:

- ``is_up``: fully UP (a deploy's gate and the capacity floor count these);
- ``is_down``: fully DOWN by its checks (MAINT is an admin state, said apart);
- ``transitional``: a state HAProxy is still moving out of: "UP 1/3" (going down), "DOWN 1/2"
  (going up), "NOLB 1/3", and a bare "NOLB" (a server answering 404 to a ``disable-on-404`` check,
  or being soft-stopped: it is on its way out, not a final state);
- ``rank``: how bad a status is when two balancers disagree (lower is worse).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field, replace

AGGREGATE_ROWS = ("FRONTEND", "BACKEND")
# Lower is worse. A state not listed (a new HAProxy wording) counts as the worst.
_RANK = {"MAINT": 0, "DOWN": 1, "NOLB": 4, "DRAIN": 5, "no check": 6, "UP": 7}


class StateParseError(Exception):
    """Text that is not a ``show stat`` CSV."""


def transitional(status: str) -> bool:
    """"UP 1/3", "DOWN 1/2", "NOLB 1/3", "NOLB": a state HAProxy is still moving out of."""
    return status.startswith(("UP ", "DOWN ", "NOLB ")) or status == "NOLB"


def rank(status: str) -> int:
    """How bad ``status`` is, lower worse: MAINT/unknown 0, DOWN 1, going up 2, going down 3, NOLB 4, DRAIN 5,
    no check 6, UP 7."""
    if status in _RANK:
        return _RANK[status]
    if status.startswith("DOWN "):
        return 2  # going up, not there yet
    if status.startswith(("UP ", "NOLB ")):
        return 3  # going down, or slow-starting
    return 0


@dataclass
class ServerStat:
    """One row of ``show stat``: a server, or a FRONTEND/BACKEND aggregate."""

    pool: str  # pxname
    server: str  # svname
    status: str  # raw: "UP", "DOWN", "UP 1/3", "DOWN 1/2", "MAINT", "DRAIN", "no check", ...
    weight: int | None
    current_sessions: int | None  # scur
    last_check: str  # check_status, e.g. "L7OK", "L4TOUT", "* L4CON" while a check runs
    last_check_detail: str = ""  # last_chk, e.g. "Connection refused"
    raw: dict = field(default_factory=dict, repr=False)  # every column by name

    @property
    def is_up(self) -> bool:
        """Fully up. Transitional states such as "UP 1/3" (going down) are not."""
        return self.status == "UP"

    @property
    def is_down(self) -> bool:
        """Fully down by its checks (MAINT is reported separately)."""
        return self.status == "DOWN"

    @property
    def is_transitional(self) -> bool:
        return transitional(self.status)

    @property
    def admin_out(self) -> str:
        """"MAINT" or "DRAIN" when an operator (or a deploy) took it out, else ""."""
        word = self.status.split()[0] if self.status else ""
        return word if word in ("MAINT", "DRAIN") else ""

    @property
    def is_aggregate(self) -> bool:
        """A FRONTEND or BACKEND summary row rather than a server."""
        return self.server in AGGREGATE_ROWS


def _int_or_none(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text.lstrip("-").isdigit() else None


def parse_show_stat(csv_text: str, *, include_aggregates: bool = False) -> list:
    """Rows of ``show stat`` CSV as ServerStat, servers only unless ``include_aggregates``.

    The header line starts with "# "; columns are looked up by name, so the
    parser does not depend on the column order of one HAProxy version.
    """
    lines = [line for line in csv_text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        raise StateParseError(f"not a 'show stat' CSV (no '# pxname,...' header): {csv_text[:120]!r}")
    reader = csv.DictReader(io.StringIO("\n".join([lines[0][2:]] + lines[1:])))
    stats = []
    for row in reader:
        stat = ServerStat(
            pool=row.get("pxname", ""),
            server=row.get("svname", ""),
            status=(row.get("status") or "").strip(),
            weight=_int_or_none(row.get("weight")),
            current_sessions=_int_or_none(row.get("scur")),
            last_check=(row.get("check_status") or "").strip(),
            last_check_detail=(row.get("last_chk") or "").strip(),
            raw={key: value for key, value in row.items() if key},
        )
        if include_aggregates or not stat.is_aggregate:
            stats.append(stat)
    return stats


def merge(rows_by_balancer: list) -> list:
    """One row per (pool, server) in the first balancer's order: the worst status, summed sessions."""
    merged, order = {}, []
    for rows in rows_by_balancer:
        for stat in rows:
            key = (stat.pool, stat.server)
            current = merged.get(key)
            if current is None:
                merged[key] = stat
                order.append(key)
                continue
            worst = stat if rank(stat.status) < rank(current.status) else current
            sessions = None if current.current_sessions is None and stat.current_sessions is None else \
                (current.current_sessions or 0) + (stat.current_sessions or 0)
            merged[key] = replace(worst, current_sessions=sessions)
    return [merged[key] for key in order]


class PoolView:
    """The servers of one pool in one ``show stat`` reading, in HAProxy's order."""

    def __init__(self, pool: str, stats):
        self.pool = pool
        self.rows = [stat for stat in stats if stat.pool == pool and not stat.is_aggregate]

    @classmethod
    def read(cls, runtime, pool: str) -> "PoolView":
        """One ``show stat`` round trip (through every balancer of a ``BalancerSet``)."""
        return cls(pool, runtime.show_stat())

    @property
    def names(self) -> list:
        return [stat.server for stat in self.rows]

    @property
    def up(self) -> set:
        return {stat.server for stat in self.rows if stat.is_up}

    def row(self, name: str):
        return next((stat for stat in self.rows if stat.server == name), None)

    def status(self, name: str, default: str = "") -> str:
        stat = self.row(name)
        return stat.status if stat is not None else default

    def statuses(self) -> dict:
        return {stat.server: stat.status for stat in self.rows}

    def settled(self, ignore=()) -> bool:
        """No server (but the ``ignore``d) is in a transitional state."""
        return not any(stat.is_transitional for stat in self.rows if stat.server not in ignore)

    def not_up(self) -> list:
        return [stat for stat in self.rows if not stat.is_up]

    def __bool__(self) -> bool:
        return bool(self.rows)

    def __len__(self) -> int:
        return len(self.rows)
