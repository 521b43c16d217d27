"""Everything a task shows or writes: masked lines, step lines, the recap, JSON reports.

One writer for every task (plays, deploys, the failover test, the lab), so the
same masking applies everywhere: secrets never reach the terminal, a report or
a diff, whether they sit in a plain string, a JSON value or one line of a
multi-line value.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
from dataclasses import dataclass

MASK = "********"
MIN_SECRET_LENGTH = 3  # shorter values would mask ordinary words
# Secrets known to the whole process (decrypted vault values, see register_secret): every Masker masks them.
_REGISTERED: set = set()


def _pieces(secrets) -> set:
    pieces = set()
    for secret in secrets:
        if secret is None or isinstance(secret, bool):
            continue
        text = str(secret)
        # A multi-line value is also masked line by line: a diff or a log shows one line at a time.
        for piece in [text, *text.splitlines(), json.dumps(text)[1:-1]]:
            if len(piece.strip()) >= MIN_SECRET_LENGTH:
                pieces.add(piece)
    return pieces


def register_secret(value) -> None:
    """A value no output may show, wherever it came from (a vault-decrypted variable...): every Masker,
    including ones made before, masks it from now on (error lines, step lines, diffs, reports)."""
    _REGISTERED.update(_pieces([value]))


class Masker:
    """Replaces secret values with asterisks in text and in structured data."""

    def __init__(self, secrets=()):
        self.own = _pieces(secrets)
        self._merged, self._registered_seen = [], -1

    @property
    def secrets(self) -> list:
        """This masker's values plus the registered ones, longest first."""
        if self._registered_seen != len(_REGISTERED):
            self._merged = sorted(self.own | _REGISTERED, key=len, reverse=True)
            self._registered_seen = len(_REGISTERED)
        return self._merged

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text

    def data(self, value):
        """``value`` (dicts, lists, strings...) with every string masked, before any serialisation."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self.data(key) if isinstance(key, str) else key: self.data(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.data(item) for item in value]
        return value

    def extended(self, more) -> "Masker":
        return Masker([*self.secrets, *more])


@dataclass
class StepLine:
    """One line of progress: who, what status, how long, what."""

    host: str
    status: str
    seconds: float
    step: str
    detail: str = ""


class Output:
    """Whole lines only, one writer at a time, so parallel hosts never interleave mid-line."""

    def __init__(self, masker: Masker | None = None, stream=None):
        self.masker = masker or Masker()
        self.stream = stream or sys.stdout
        self.lock = threading.Lock()

    def line(self, text: str) -> None:
        with self.lock:
            self.stream.write(self.masker(text) + "\n")
            self.stream.flush()

    def step(self, host: str, status: str, seconds: float, step: str, detail: str = "") -> None:
        """``host  status  1.23s  step  detail`` — the one step-line format of every task."""
        tail = f"  {detail}" if detail else ""
        self.line(f"{host:<16} {status:<11} {seconds:6.2f}s  {step}{tail}".rstrip())

    def recap(self, title: str, seconds: float | None, per_host: dict) -> None:
        """``-- recap: title (1.2s)`` then ``host : ok=N changed=N failed=N`` per host."""
        took = f" ({seconds:.2f}s)" if seconds is not None else ""
        self.line(f"-- recap: {title}{took}")
        for host, counts in per_host.items():
            extra = "".join(f" {key}={value}" for key, value in counts.items()
                            if key not in ("ok", "changed", "failed") and value)
            self.line(f"{host:<16} : ok={counts.get('ok', 0)} changed={counts.get('changed', 0)} "
                      f"failed={counts.get('failed', 0)}{extra}")

    def error(self, text: str) -> None:
        """One ``error:`` line on stderr, masked."""
        with self.lock:
            sys.stderr.write(f"error: {self.masker(text)}\n")
            sys.stderr.flush()


def write_private(path: str, data: bytes, mode: int = 0o644) -> None:
    """Write ``path`` through a temporary file born with ``mode``, then rename over it.

    The temporary file is created with O_EXCL in the target's directory (never
    through a planted symlink), and a symlink at ``path`` itself is replaced,
    not followed.
    """
    directory = os.path.dirname(os.path.abspath(path))
    handle, staging = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        os.fchmod(handle, mode)
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(staging, path)
    except BaseException:
        try:
            os.unlink(staging)
        except FileNotFoundError:
            pass
        raise


def write_report(path: str, payload, masker: Masker) -> None:
    """``payload`` (anything JSON can hold) as JSON at ``path``, masked before serialisation."""
    text = json.dumps(masker.data(payload), indent=2)
    write_private(path, (masker(text) + "\n").encode("utf-8"))
