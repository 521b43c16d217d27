"""The one parser of task flags: numbers, durations, percentages, enums and paths.

Every task flag arrives as the text typed (``support.Task`` declares numeric flags as
strings, so Invoke's own ``int()`` never sees them) and is parsed here: bad input is
one ``UsageError`` line naming the flag (exit 2) before any host is touched. Numbers
are ASCII digits only (Python's ``int``/``float`` would take ``٤٠``). Output paths
(``--report``, ``--plot``, ``--out``) are checked writable before the play starts, so a
long run never ends on an unwritable path.
"""

from __future__ import annotations

import math
import os
import re

from .exits import UsageError
from .masking import shown

_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_DURATION = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>ms|s|m|h)?")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_DIGITS = 18  # beyond this a number is a typo, not a count


def _text(flag: str, value) -> str:
    if isinstance(value, bool):
        raise UsageError(f"--{flag} needs a value")
    text = str(value).strip()
    if not text:
        raise UsageError(f"--{flag}: empty value")
    return text


def decimal(value) -> float | None:
    """``value`` as a finite float when it is a number or ASCII decimal text, else None (for parsers that
    word their own error line, e.g. a list of percentages)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    text = str(value).strip()
    if not _DECIMAL.fullmatch(text) or len(text) > 40:
        return None
    result = float(text)
    return result if math.isfinite(result) else None


def integer(flag: str, value, low: int | None = None, high: int | None = None) -> int:
    """A whole number of ASCII digits within [low, high]."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        text = _text(flag, value)
        if not _INTEGER.fullmatch(text) or len(text) > MAX_DIGITS:
            raise UsageError(f"--{flag} {shown(text)}: not a whole number (ASCII digits)")
        number = int(text)
    _check_range(flag, number, low, high)
    return number


def number(flag: str, value, low: float | None = None, high: float | None = None, *, above: float | None = None) -> float:
    """A finite decimal number (ASCII digits) within [low, high] (and > ``above`` when given)."""
    result = decimal(value if isinstance(value, (int, float)) else _text(flag, value))
    if result is None:
        raise UsageError(f"--{flag} {shown(value)}: not a number (a finite one, ASCII digits)")
    if above is not None and result <= above:
        raise UsageError(f"--{flag} {result:g}: must be more than {above:g}")
    _check_range(flag, result, low, high)
    return result


def duration(flag: str, value, low: float = 0.0, high: float = 86400.0) -> float:
    """Seconds from ``30``, ``2.5s``, ``500ms``, ``5m``, ``1h`` (ASCII digits), within [low, high]."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = _text(flag, value)
        match = _DURATION.fullmatch(text)
        if not match or len(text) > 30:
            raise UsageError(f"--{flag} {shown(text)}: not a duration (e.g. 30, 2.5s, 500ms, 5m)")
        seconds = float(match["number"]) * _UNITS[match["unit"]]
    if not math.isfinite(seconds) or not low <= seconds <= high:
        raise UsageError(f"--{flag} {seconds:g}s: must be from {low:g}s to {high:g}s")
    return seconds


def percent(flag: str, value, low: float = 0.0, high: float = 100.0) -> float:
    """A percentage ``5``, ``5%`` or ``0.5%`` as a number of percent, within [low, high]."""
    text = _text(flag, value)
    return number(flag, text[:-1] if text.endswith("%") else text, low, high)


def choice(flag: str, value, allowed) -> str:
    """One of ``allowed`` (case-sensitive, as typed)."""
    text = _text(flag, value)
    if text not in allowed:
        raise UsageError(f"--{flag} {shown(text)}: not one of {', '.join(allowed)}")
    return text


def output_path(flag: str, path) -> str | None:
    """A file we may create or replace: its folder exists and is writable, it is not a folder.

    Checked before the play starts so the work is never lost to an unwritable path at the end.
    """
    if path in (None, ""):
        return None
    text = _text(flag, path)
    if "\x00" in text:
        raise UsageError(f"--{flag} {shown(text)}: not a path")
    folder = os.path.dirname(os.path.abspath(text)) or "."
    if os.path.isdir(text):
        raise UsageError(f"--{flag} {shown(text)}: is a folder; give a file path")
    if not os.path.isdir(folder):
        raise UsageError(f"--{flag} {shown(text)}: folder {shown(folder)} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK) or (os.path.exists(text) and not os.access(text, os.W_OK)):
        raise UsageError(f"--{flag} {shown(text)}: not writable")
    return text


def output_folder(flag: str, path) -> str | None:
    """A folder we may write into: an existing writable folder, or one we can create (its nearest
    existing parent is a writable folder)."""
    if path in (None, ""):
        return None
    text = _text(flag, path)
    if "\x00" in text:
        raise UsageError(f"--{flag} {shown(text)}: not a path")
    existing = os.path.abspath(text)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"--{flag} {shown(text)}: {shown(existing)} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--{flag} {shown(text)}: {shown(existing)} is not writable")
    return text


def input_file(flag: str, path, what: str = "file") -> str:
    """A readable regular UTF-8 text file (a folder, a device or a binary file is one line, exit 2)."""
    text = _text(flag, path)
    if os.path.isdir(text):
        raise UsageError(f"--{flag} {shown(text)}: is a folder; give the {what}'s path")
    if not os.path.exists(text):
        raise UsageError(f"--{flag} {shown(text)}: no such {what}")
    if not os.path.isfile(text):
        raise UsageError(f"--{flag} {shown(text)}: not a regular file")
    try:
        with open(text, "rb") as handle:
            head = handle.read(1 << 20)
    except OSError as exc:
        raise UsageError(f"--{flag} {shown(text)}: cannot read it ({exc.strerror})") from None
    if b"\x00" in head:
        raise UsageError(f"--{flag} {shown(text)}: a binary file, not a text {what}")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # a cut multi-byte character at the end of the sample is fine
            raise UsageError(f"--{flag} {shown(text)}: not UTF-8 text") from None
    return text


def _check_range(flag: str, value, low, high) -> None:
    if (low is not None and value < low) or (high is not None and value > high):
        if low is not None and high is not None:
            bounds = f"from {low:g} to {high:g}"
        elif low is not None:
            bounds = f"{low:g} or more"
        else:
            bounds = f"at most {high:g}"
        raise UsageError(f"--{flag} {value:g}: must be {bounds}")
