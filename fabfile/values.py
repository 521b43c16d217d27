"""The grammar of each kind of value we write into a config file, a unit or a command.

Every inventory, ``--set`` or secret value rendered into haproxy.cfg, a systemd
unit or an env file goes through one of these checks first, so no value can
add a line or a directive. A refusal is an ``InvalidValue`` whose message is
the one line shown (exit 2, before any host is touched).
"""

from __future__ import annotations

import re


class InvalidValue(Exception):
    """A value does not fit its slot; the message names the variable and what is allowed."""


CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
_FILE_NAME = re.compile(r"[A-Za-z0-9._-]{1,255}")
_PATH = re.compile(r"/[A-Za-z0-9._/@+-]*")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")


def _shown(value) -> str:
    """Input quoted in an error line: masked, control characters escaped, shortened."""
    from .masking import shown

    return shown(value, limit=80)


def text(name: str, value) -> str:
    """Any printable text on one line (secrets, descriptions): no control character at all."""
    value = str(value)
    if CONTROL_CHARACTER.search(value):
        raise InvalidValue(f"{name}: contains a control character (newline, tab, ...); one printable line only")
    return value


def matching(name: str, value, pattern: re.Pattern, what: str) -> str:
    """``value`` as a string when the whole of it matches ``pattern`` (no trailing newline slips through)."""
    shown = str(value)
    if isinstance(value, bool) or not pattern.fullmatch(shown):
        raise InvalidValue(f"{name}: {_shown(value)} is not {what}")
    return shown


def grammar(pattern: str, what: str):
    """A check ``(name, value) -> str``: the value as a string when the whole of it matches ``pattern``,
    else ``InvalidValue`` naming the variable and ``what`` the slot takes."""
    compiled = re.compile(pattern)

    def check(name: str, value) -> str:
        return matching(name, value, compiled, what)
    return check


user_name = grammar(r"[a-z_][a-z0-9_-]{0,31}", "a user/group name (lower-case letters, digits, '_', '-')")
url_path = grammar(r"/[A-Za-z0-9._~/%+-]*", "a URL path starting with '/' (no spaces, quotes or control characters)")
token = grammar(r"[A-Za-z0-9_.-]+", "a plain token (letters, digits, '_', '-', '.')")
hostname = grammar(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})?(:[0-9]{1,5})?", "a host name or address (optionally :port)")
haproxy_time = grammar(r"[0-9]{1,12}(?:us|ms|s|m|h|d)?",  # ASCII digits: HAProxy reads no other
                       "an HAProxy time (ASCII digits, optional unit us/ms/s/m/h/d)")
duration = grammar(r"[0-9]{1,12}(?:ms|s|m|h|d|w|y)", "a duration like 15s, 1m or 500ms")  # Prometheus's
plain_line = grammar(r"[A-Za-z0-9 ._:/,()@+=%~#*\[\]-]*",
                     "one plain line (letters, digits, spaces and . _ : / , ( ) @ + = % ~ -)")


def file_name(name: str, value) -> str:
    value = matching(name, value, _FILE_NAME, "a file name (letters, digits, '.', '_', '-')")
    if value in (".", ".."):
        raise InvalidValue(f"{name}: {value!r} is not a file name")
    return value


def absolute_path(name: str, value) -> str:
    value = matching(name, value, _PATH, "an absolute path (letters, digits, '/', '.', '_', '-', '@', '+')")
    if "/../" in value + "/" or value.endswith("/.."):
        raise InvalidValue(f"{name}: {value!r} must not contain '..'")
    return value


def integer(name: str, value, low: int, high: int | None = None) -> int:
    """A whole number in [low, high]; strings of digits accepted (YAML and --set give either)."""
    if isinstance(value, bool) or not re.fullmatch(r"-?[0-9]+", str(value)):
        raise InvalidValue(f"{name}: {_shown(value)} is not a whole number")
    number = int(value)
    if number < low or (high is not None and number > high):
        upper = f" to {high}" if high is not None else " or more"
        raise InvalidValue(f"{name}: {number} must be from {low}{upper}")
    return number


def port(name: str, value) -> int:
    return integer(name, value, 1, 65535)


def seconds(name: str, value, low: float = 0.0, high: float = 86400.0, allow_low: bool = True) -> float:
    """A duration in seconds (int or float, or a string of one), within bounds."""
    if isinstance(value, bool) or not (isinstance(value, (int, float)) or _DECIMAL.fullmatch(str(value).strip())):
        raise InvalidValue(f"{name}: {_shown(value)} is not a number of seconds (ASCII digits)")
    number = float(value)
    if number != number or number > high or number < low or (number == low and not allow_low):
        bound = ">" if not allow_low else ">="
        raise InvalidValue(f"{name}: {number:g} must be {bound} {low:g} and <= {high:g} seconds")
    return number


def one_of(name: str, value, allowed) -> str:
    if value not in allowed:
        raise InvalidValue(f"{name}: {_shown(value)} is not one of {', '.join(map(str, allowed))}")
    return value


def count_or_percent(name: str, value, total: int, low: int = 1, high: int | None = -1) -> int:
    """``N`` or ``P%`` of ``total`` as a count (a percentage rounds down, as Ansible's ``serial`` does,
    but never below ``low``); refused outside [low, high] (default ``total``; None: no bound) or above 100 %."""
    text = str(value).strip()
    if isinstance(value, bool) or not re.fullmatch(r"[0-9]+%?", text):
        raise InvalidValue(f"{name}: {_shown(value)} is not a count (N) or a percentage (P%)")
    if text.endswith("%"):
        percent = int(text[:-1])
        if not low <= percent <= 100 or (percent == 0 and low > 0):
            raise InvalidValue(f"{name}: {percent}% must be from {max(low, 1) if low else 0}% to 100%")
        return max(low, total * percent // 100)
    return integer(name, text, low, total if high == -1 else high)


def flag_number(flag: str, text, most: float | None = None) -> float:
    """A numeric command-line flag that arrives as text (``flags.number``: ASCII digits, one line on a typo);
    with ``most``, it must also be a finite number in (0, most]."""
    from .flags import number

    value = number(flag, text)
    if most is not None and not 0 < value <= most:
        raise InvalidValue(f"--{flag} {text}: must be a number > 0 and <= {most:g}")
    return value
