"""What a canary does, as data; pure (no I/O), unit-tested by value.

``canary_plan`` checks the ``--canary-*`` flags (one ``InvalidValue`` line, exit 2), ``weights_for_share``
picks the runtime weights that give the canaries a step's share of a weighted pool, ``weight_mode`` says
what a weight moves in a pool: requests (roundrobin, leastconn, random), hash keys such as tracks
(a hash with ``hash-type consistent``), or nothing at run time (a static algorithm).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..masking import shown
from ..values import InvalidValue, integer, seconds

MAX_WEIGHT = 256  # HAProxy's runtime weights are 0..256
DEFAULT_STEPS = "10,25,50"


@dataclass(frozen=True)
class CanaryPlan:
    """The canary's steps (percent of the pool's requests), one analysis per ``interval`` seconds, abort after
    ``checks`` failed intervals, thresholds against the stable servers, ``count`` canary instances."""

    steps: tuple = (10.0, 25.0, 50.0)
    interval: float = 30.0
    checks: int = 2
    max_5xx: float = 1.0  # percentage points of 5xx above the stable servers' share
    max_slowdown: float = 50.0  # percent slower mean response time than the stable servers
    min_requests: int = 20  # fewer canary requests in an interval: inconclusive
    count: int = 1
    inconclusive_limit: int = 3  # inconclusive intervals in a row before the canary is aborted
    latency_floor_ms: float = 5.0  # a slowdown smaller than this many ms is noise, whatever its ratio
    # HAProxy's slowstart: a canary back in rotation reaches its weight only this many seconds later, so
    # an interval ending sooner may see too few canary requests through no fault of the build.
    ramp: float = 0.0

    @property
    def abort_bound(self) -> float:
        """Seconds within which a canary failing every interval is aborted: ``interval × checks + interval``."""
        return self.interval * (self.checks + 1)


def parse_steps(text) -> tuple:
    """``"10,25,50"`` -> (10.0, 25.0, 50.0): strictly increasing percentages above 0 and below 100."""
    from ..flags import decimal

    steps = tuple(decimal(part.strip().rstrip("%")) for part in str(text).split(","))
    if None in steps:
        raise InvalidValue(f"--canary-steps {shown(text)}: expected percentages such as 10,25,50 (ASCII digits)")
    if not steps or any(not 0 < step < 100 for step in steps):
        raise InvalidValue(f"--canary-steps {shown(text)}: every step must be above 0 and below 100 (percent of requests)")
    if any(later <= earlier for earlier, later in zip(steps, steps[1:])):
        raise InvalidValue(f"--canary-steps {shown(text)}: steps must increase (e.g. 10,25,50)")
    return steps


def percent(flag: str, value, high: float = 100.0) -> float:
    from ..flags import decimal

    number = decimal(value)
    if number is None:
        raise InvalidValue(f"{flag} {shown(value)}: not a number (percent, ASCII digits)")
    if not 0 <= number <= high:
        raise InvalidValue(f"{flag} {value}: must be from 0 to {high:g} (percent)")
    return number


def canary_plan(*, steps=DEFAULT_STEPS, interval=30, checks=2, max_5xx=1, max_slowdown=50, min_requests=20,
                count=1, targets: int, pool_size: int, variables: dict | None = None, ramp: float = 0.0) -> CanaryPlan:
    """Every ``--canary-*`` flag checked before anything is touched. ``targets``: the deploy's instances;
    ``pool_size``: the pool's servers (at least one must stay stable to compare the canaries with); ``ramp``:
    the balancers' slowstart in seconds."""
    variables = variables or {}
    canaries = integer("--canary-count", count, 1)
    if canaries >= pool_size or canaries > targets:
        raise InvalidValue(f"--canary-count {canaries}: the pool has {pool_size} server(s) and this deploy targets "
                           f"{targets}; a canary needs at least one stable server beside it to be compared with")
    return CanaryPlan(
        steps=parse_steps(steps),
        interval=seconds("--canary-interval", interval, low=1, high=3600),
        checks=integer("--canary-checks", checks, 1, 100),
        max_5xx=percent("--canary-max-5xx", max_5xx),
        max_slowdown=percent("--canary-max-slowdown", max_slowdown, high=10000),
        min_requests=integer("--canary-min-requests", min_requests, 1),
        count=canaries,
        inconclusive_limit=integer("deploy_canary_inconclusive_limit",
                                   variables.get("deploy_canary_inconclusive_limit", 3), 1, 100),
        latency_floor_ms=seconds("deploy_canary_latency_floor_ms",
                                 variables.get("deploy_canary_latency_floor_ms", 5), high=60000),
        ramp=ramp,
    )


def weights_for_share(share: float, canaries: int, stables: int) -> tuple:
    """(canary weight, stable weight), each 1..256, whose split of a weighted pool comes closest to ``share``
    (a fraction) for the canaries together; among equally close pairs, the smallest weights."""
    if not 0 < share < 1 or canaries < 1 or stables < 1:
        raise ValueError(f"no weights give {canaries} canaries {share:.0%} beside {stables} stable servers")
    best = None
    for stable_weight in range(1, MAX_WEIGHT + 1):
        ideal = share * stables * stable_weight / (canaries * (1 - share))
        for canary_weight in {max(1, min(MAX_WEIGHT, int(ideal))), max(1, min(MAX_WEIGHT, int(ideal) + 1))}:
            got = canaries * canary_weight / (canaries * canary_weight + stables * stable_weight)
            key = (round(abs(got - share), 9), canary_weight + stable_weight)
            if best is None or key < best[0]:
                best = (key, (canary_weight, stable_weight))
    return best[1]


def share_of(canary_weight: int, stable_weight: int, canaries: int, stables: int) -> float:
    """The canaries' share of a weighted pool with these weights."""
    total = canaries * canary_weight + stables * stable_weight
    return canaries * canary_weight / total if total else 0.0


REQUEST_ALGORITHMS = ("roundrobin", "leastconn", "random")
STATIC_ALGORITHMS = ("static-rr", "first")
HASH_ALGORITHMS = ("source", "uri", "url_param", "hdr", "rdp-cookie", "hash")


def weight_mode(balance: str, hash_type: str | None) -> str:
    """What a runtime weight moves in a pool balanced by ``balance`` (its ``hash-type``, None when the
    backend renders none, i.e. HAProxy's map-based default): ``requests``, ``keys`` (a consistent hash: a
    share of the hashed keys, e.g. tracks, each staying on its server) or ``static`` (weights are fixed at
    start: HAProxy takes only 0 % or 100 % at run time)."""
    algorithm = (str(balance).split() or [""])[0]
    name = algorithm.split("(")[0]
    if name in REQUEST_ALGORITHMS:
        return "requests"
    if name in HASH_ALGORITHMS:
        return "keys" if (hash_type or "map-based").split()[0] == "consistent" else "static"
    return "static"
