"""Numbers of one scenario: HDR latency histograms (whole run and per 1 s bucket), error classes,
status codes, the per-backend split and the generator's scheduling lag.

Latency is recorded for every request that got an answer (``ok`` and ``status``, when measured),
in microseconds, from its intended send time. Requests without an answer count
in the error classes only: a timeout's "latency" is the timeout setting, not a
measurement. Buckets are keyed by intended send time (a stall shows where the
requests were due) except ``completed``, keyed by completion time (throughput).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .outcomes import DROPPED, ERROR_CLASSES, OK, STATUS, Sample

PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))
LOWEST_US, HIGHEST_US = 1, 120_000_000  # 1 µs .. 120 s: above any request timeout we accept
RUN_DIGITS, BUCKET_DIGITS = 3, 2  # 0.1 % precision for the run; 1 % per second (140 kB vs 21 kB each)
MAX_ERROR_EXAMPLES = 3  # distinct messages kept per error class


def new_histogram(digits: int = RUN_DIGITS):
    """An empty HDR histogram of microseconds (the import is here: only runs need it)."""
    from hdrh.histogram import HdrHistogram

    return HdrHistogram(LOWEST_US, HIGHEST_US, digits)


def to_us(seconds: float) -> int:
    return min(HIGHEST_US, max(LOWEST_US, round(seconds * 1_000_000)))


def latency_summary(histogram) -> dict:
    """p50/p90/p99/p99.9/max/mean in milliseconds (None when nothing was recorded)."""
    if histogram.get_total_count() == 0:
        return {name: None for name, _ in PERCENTILES} | {"max": None, "mean": None}
    summary = {name: histogram.get_value_at_percentile(pct) / 1000 for name, pct in PERCENTILES}
    summary["max"] = histogram.get_max_value() / 1000
    summary["mean"] = round(histogram.get_mean_value() / 1000, 3)
    return summary


@dataclass
class Bucket:
    """One second of the run."""

    histogram: object
    sent: int = 0  # requests whose intended send time fell in this second
    ok: int = 0
    errors: int = 0
    completed: int = 0  # answers (ok or status) that arrived in this second


@dataclass
class ScenarioStats:
    """Everything recorded for one scenario (one fixed-rate run or one ramp step)."""

    name: str
    t0: float
    keep_samples: bool = False
    histogram: object = None
    lag_histogram: object = None
    buckets: dict = field(default_factory=dict)
    outcomes: Counter = field(default_factory=Counter)
    status_codes: Counter = field(default_factory=Counter)
    by_instance: Counter = field(default_factory=Counter)
    error_examples: dict = field(default_factory=dict)
    samples: list = field(default_factory=list)
    last_completion: float = 0.0

    def __post_init__(self):
        self.histogram = self.histogram or new_histogram()
        self.lag_histogram = self.lag_histogram or new_histogram()

    def _bucket(self, t: float) -> Bucket:
        second = max(0, int(t - self.t0))
        if second not in self.buckets:
            self.buckets[second] = Bucket(new_histogram(BUCKET_DIGITS))
        return self.buckets[second]

    def record(self, sample: Sample) -> None:
        """Count one finished (or dropped) request."""
        self.outcomes[sample.outcome] += 1
        bucket = self._bucket(sample.t)
        bucket.sent += 1
        self.lag_histogram.record_value(to_us(sample.lag))
        if sample.outcome in (OK, STATUS) and sample.measured:
            micros = to_us(sample.seconds)
            self.histogram.record_value(micros)
            bucket.histogram.record_value(micros)
            done = sample.t + sample.seconds
            self._bucket(done).completed += 1
            self.last_completion = max(self.last_completion, done)
        if sample.status is not None:
            self.status_codes[str(sample.status)] += 1
        if sample.outcome == OK:
            bucket.ok += 1
            if sample.instance:
                self.by_instance[sample.instance] += 1
        else:
            bucket.errors += 1
            examples = self.error_examples.setdefault(sample.outcome, [])
            if sample.error and sample.error not in examples and len(examples) < MAX_ERROR_EXAMPLES:
                examples.append(sample.error)
        if self.keep_samples:
            self.samples.append(sample)

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())

    @property
    def error_count(self) -> int:
        return self.total - self.outcomes[OK]

    def summary(self, wall_seconds: float) -> dict:
        """The scenario's report section (``wall_seconds``: from t0 to the end of the run)."""
        total = self.total
        duration = max(wall_seconds, 1e-9)
        return {
            "requests": total,
            "ok": self.outcomes[OK],
            "errors": {name: self.outcomes[name] for name in ERROR_CLASSES if self.outcomes[name]},
            "error_count": self.error_count,
            "error_rate": round(self.error_count / total, 6) if total else 0.0,
            "dropped": self.outcomes[DROPPED],
            "status_codes": dict(sorted(self.status_codes.items())),
            "error_examples": self.error_examples,
            "latency_ms": latency_summary(self.histogram),
            "throughput_rps": round(self.outcomes[OK] / duration, 2),
            "by_instance": dict(sorted(self.by_instance.items())),
            "lag_ms": latency_summary(self.lag_histogram),
            "timeline": self.timeline(),
            "hdr_histogram": self.histogram.encode().decode("ascii") if self.histogram.get_total_count() else "",
        }

    def timeline(self) -> list:
        """One row per second: sent, ok, errors, answers completed, p50/p99 of that second's requests."""
        rows = []
        for second in range(max(self.buckets, default=-1) + 1):
            bucket = self.buckets.get(second) or Bucket(None)
            latency = latency_summary(bucket.histogram) if bucket.histogram is not None else {}
            rows.append({"t": second, "sent": bucket.sent, "ok": bucket.ok, "errors": bucket.errors,
                         "completed": bucket.completed, "p50_ms": latency.get("p50"), "p99_ms": latency.get("p99")})
        return rows
