"""What Prometheus and Alertmanager say, asked on the monitor host through its transport.

The commands are data (``curl`` against loopback on the monitor host, so it works wherever the
task reaches the host: incus, ssh); the parsers are pure. ``MonitorAPI`` runs one command per
question.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..shell import Command, q
from .settings import MonitoringSettings


class MonitorAPIError(Exception):
    """Prometheus or Alertmanager did not answer, or answered something else than their API."""


@dataclass(frozen=True)
class Alert:
    name: str
    labels: dict
    starts_at: str
    summary: str

    def matches(self, name: str, labels: dict) -> bool:
        return self.name == name and all(self.labels.get(k) == v for k, v in labels.items())


@dataclass(frozen=True)
class TargetHealth:
    job: str
    instance: str
    url: str
    health: str  # up | down | unknown
    last_error: str


def _get(url: str, timeout: float = 5) -> Command:
    return Command(f"curl -s -S --fail --max-time {timeout:g} {q(url)}", timeout=timeout + 10)


def alerts_command(settings: MonitoringSettings) -> Command:
    """Alertmanager's active alerts (not silenced, not inhibited): what would page."""
    return _get(f"http://127.0.0.1:{settings.alertmanager_port}/api/v2/alerts?active=true&silenced=false"
                "&inhibited=false")


def targets_command(settings: MonitoringSettings) -> Command:
    return _get(f"http://127.0.0.1:{settings.prometheus_port}/api/v1/targets?state=active")


def notifications_command(settings: MonitoringSettings, last: int) -> Command:
    return Command(f"tail -n {int(last)} {q(settings.webhook_log)} 2>/dev/null || true", timeout=15)


def _json(text: str, what: str):
    try:
        return json.loads(text)
    except ValueError:
        raise MonitorAPIError(f"{what} answered something that is not JSON: {text[:80]!r}") from None


def parse_alerts(text: str) -> list:
    """Alertmanager's /api/v2/alerts: the active ones, sorted by name and labels."""
    data = _json(text, "Alertmanager")
    if not isinstance(data, list):
        raise MonitorAPIError("Alertmanager's /api/v2/alerts did not answer a list")
    alerts = []
    for item in data:
        if (item.get("status") or {}).get("state", "active") != "active":
            continue
        labels = {str(k): str(v) for k, v in (item.get("labels") or {}).items()}
        alerts.append(Alert(labels.pop("alertname", "?"), labels, str(item.get("startsAt", "")),
                            str((item.get("annotations") or {}).get("summary", ""))))
    return sorted(alerts, key=lambda a: (a.name, sorted(a.labels.items())))


def parse_targets(text: str) -> list:
    data = _json(text, "Prometheus")
    if not isinstance(data, dict) or data.get("status") != "success":
        raise MonitorAPIError("Prometheus' /api/v1/targets did not answer success")
    targets = []
    for item in (data.get("data") or {}).get("activeTargets") or []:
        labels = item.get("labels") or {}
        targets.append(TargetHealth(str(labels.get("job", "?")), str(labels.get("instance", "?")),
                                    str(item.get("scrapeUrl", "")), str(item.get("health", "unknown")),
                                    str(item.get("lastError", ""))))
    return sorted(targets, key=lambda t: (t.job, t.instance))


def parse_notifications(text: str) -> list:
    """The webhook log's JSON lines (a line cut by a rotation is skipped)."""
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


class MonitorAPI:
    """Questions to the monitor host's Prometheus and Alertmanager, one round trip each."""

    def __init__(self, transport, settings: MonitoringSettings):
        self.transport = transport
        self.settings = settings

    def _ask(self, command: Command, what: str) -> str:
        result = self.transport.run(command, warn=True)
        if result.exited != 0:
            raise MonitorAPIError(f"{what} on {self.transport.host.name} did not answer "
                                  f"({(result.stderr or result.stdout).strip()[:120] or f'exit {result.exited}'}); "
                                  "run inv monitor.setup")
        return result.stdout

    def alerts(self) -> list:
        return parse_alerts(self._ask(alerts_command(self.settings), "Alertmanager"))

    def targets(self) -> list:
        return parse_targets(self._ask(targets_command(self.settings), "Prometheus"))

    def notifications(self, last: int = 20) -> list:
        return parse_notifications(self._ask(notifications_command(self.settings, last), "the webhook log"))
