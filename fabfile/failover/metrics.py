"""HAProxy's Prometheus exporter, read from the workstation: the text exposition format, parsed.

Only the lines the failover test needs (``haproxy_server_status``,
``haproxy_server_check_up_down_total``) are read, from ``/metrics?scope=server``.
The parser follows the text format (version 0.0.4): comments and blank lines
skipped; ``name{label="value",...} value [timestamp]``; label values unescape
``\\\\``, ``\\"`` and ``\\n``. Small enough not to add prometheus_client for it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_LINE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+-?\d+)?\s*$")
_LABEL = re.compile(r'\s*(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"(?P<value>(?:[^"\\]|\\.)*)"\s*(?:,|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


class ExpositionError(ValueError):
    """A line that is not in the Prometheus text format."""


@dataclass(frozen=True)
class MetricSample:
    name: str
    labels: dict
    value: float


def _labels(text: str, line: str) -> dict:
    labels, position = {}, 0
    while position < len(text.rstrip()):
        match = _LABEL.match(text, position)
        if not match:
            raise ExpositionError(f"bad labels in {line[:120]!r}")
        labels[match["key"]] = re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m.group()], match["value"])
        position = match.end()
    return labels


def parse_exposition(text: str, names=None) -> list:
    """The samples of ``text`` (only those named in ``names``, when given), in order."""
    samples = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise ExpositionError(f"not a sample line: {line[:120]!r}")
        if names is not None and match["name"] not in names:
            continue
        try:
            value = float(match["value"])  # also +Inf, -Inf, NaN
        except ValueError:
            raise ExpositionError(f"bad value in {line[:120]!r}") from None
        samples.append(MetricSample(match["name"], _labels(match["labels"] or "", line), value))
    return samples


def value_of(samples, name: str, **labels) -> float | None:
    """The one value of ``name`` whose labels include ``labels``; None when absent."""
    found = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    return found[0] if found and not math.isnan(found[0]) else None


SERVER_METRICS = ("haproxy_server_status", "haproxy_server_check_up_down_total")


class ServerMetrics:
    """``read()``: the server-scope samples of one exporter over HTTP (the load engine's ``fetch``)."""

    def __init__(self, base_url: str, path: str = "/metrics", timeout: float = 2.0):
        self.base_url, self.path, self.timeout = base_url, path, timeout

    @property
    def url(self) -> str:
        return f"{self.base_url}{self.path}"

    def read(self) -> list:
        from ..loadtest.facade import fetch

        reply = fetch(self.base_url, f"{self.path}?scope=server", timeout=self.timeout)
        if reply.status != 200:
            raise ExpositionError(f"{self.url}: HTTP {reply.status}: {reply.body[:120]!r}")
        return parse_exposition(reply.body, SERVER_METRICS)
