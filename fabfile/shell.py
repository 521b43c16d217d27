"""Commands as data: shell quoting, ``Command`` and ``Upload``. No I/O here.

The lowest layer. Everything that decides *what* to run on a host (operations,
the service commands of a deploy, the runtime API's command lines, the lab's
Incus calls, the failover stoppers) builds these values; only the transports
and the orchestration that owns them carry them out. That keeps every command
testable by comparing values, as Kamal's command tests do.
"""

from __future__ import annotations

import os
import secrets
import shlex
from dataclasses import dataclass

# This run's token: temporary names on hosts carry it, so no two runs (and no leftover) share a file.
RUN_ID = f"{os.getpid()}-{secrets.token_hex(4)}"


def q(value) -> str:
    """Quote one value for a POSIX shell."""
    return shlex.quote(str(value))


def argv_line(argv) -> str:
    """An argv list as one shell-quoted line, for messages and logs."""
    return " ".join(q(part) for part in argv)


@dataclass(frozen=True)
class Command:
    """A shell command for the host's ``sh -c``; every value in it already quoted with ``q``."""

    command: str
    # Seconds the command may run; None leaves it to the transport's default.
    timeout: float | None = None


@dataclass(frozen=True)
class Upload:
    """Bytes (or a local file's path) to put on the host at ``remote``, born with ``mode``."""

    content: bytes | str
    remote: str
    mode: str = "0600"


def chain(commands) -> str:
    """Several quoted commands as one line that stops at the first failure (one round trip)."""
    return " && ".join(f"{{ {command} ; }}" for command in commands)
