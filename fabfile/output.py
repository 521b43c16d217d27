"""Everything a task shows or writes: masked lines, step lines, the recap, JSON reports.

One writer for every task (plays, deploys, the failover test, the lab), so the
same masking applies everywhere: secrets never reach the terminal, a report or
a diff, whether they sit in a plain string, a JSON value or one line of a
multi-line value.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from dataclasses import dataclass

from . import masking

MASK = masking.MASK


class Masker:
    """Masks, by ``masking``'s one rule, the registered secrets plus ``secrets`` (e.g. a play's hosts'
    secret-named values) in text and in structured data."""

    def __init__(self, secrets=()):
        # A multi-line value is also masked line by line: a diff or a log shows one line at a time.
        self.secrets = sorted({piece for secret in secrets for piece in masking.pieces_of(secret)}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        return masking.mask_text(text, self.secrets)

    def values_only(self, text: str) -> str:
        """``text`` with the known secret values masked but no inline rule: for lines the tool writes
        itself that name keys and hold no value (``JWT_SECRET: changed`` must stay readable)."""
        return masking.mask_values(text, self.secrets)

    def data(self, value):
        """``value`` (dicts, lists, strings...) masked (secret-named keys at any depth too), before serialisation."""
        return masking.mask_data(value, values=self.secrets)

    def extended(self, more) -> "Masker":
        return Masker([*self.secrets, *more])


class PrintableStream:
    """A task's stdout/stderr: whatever is printed (remote output, host names, values, a status table)
    reaches the terminal with registered secrets masked and control characters escaped; newlines and
    tabs stay. Escaping is idempotent, so text already escaped passes unchanged."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text) -> int:
        self.stream.write(masking.escaped(masking.mask_registered(text), keep_newlines=True))
        return len(text)

    def __getattr__(self, name):  # flush, fileno, isatty, encoding... of the real stream
        return getattr(self.stream, name)


@contextlib.contextmanager
def printable_streams():
    """``sys.stdout``/``sys.stderr`` through ``PrintableStream`` while a task runs."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = PrintableStream(saved[0]), PrintableStream(saved[1])
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


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

    def line(self, text: str, *, holds_values: bool = True) -> None:
        """One line, masked; ``holds_values=False`` for a line the tool wrote that holds no value (key names
        only): then only the known secret values are masked, not what merely looks like ``NAME: value``."""
        mask = self.masker if holds_values else self.masker.values_only
        with self.lock:
            self.stream.write(masking.escaped(mask(text), keep_newlines=True) + "\n")
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
            sys.stderr.write(f"error: {masking.escaped(self.masker(text))}\n")
            sys.stderr.flush()


def write_private(path: str, data: bytes, mode: int = 0o600) -> None:
    """``files.write_atomic``: reports, plots and exports are the operator's alone (0600)."""
    from .files import write_atomic

    write_atomic(path, data, mode)


def write_report(path: str, payload, masker: Masker) -> None:
    """``payload`` (anything JSON can hold) as JSON at ``path``, masked before serialisation."""
    text = json.dumps(masker.data(payload), indent=2)
    write_private(path, (masker(text) + "\n").encode("utf-8"))
