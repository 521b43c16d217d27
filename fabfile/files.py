"""The one way the tool writes a local file: through a temporary file in the target's directory, born
with its final mode, renamed over the target once complete; and the one way it reads a file the user
named (an inventory, a secrets file): its text, or one line saying what is wrong and what to do.

A reader never sees half a file; an interrupted write leaves the old file and no temporary one; the
temporary name is made with O_EXCL (never through a planted symlink) and a symlink at the target is
replaced, not followed. Reports, plots, keys and exports are private (0600) unless asked otherwise;
the process's umask still applies on top.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE = 0o600


def current_umask() -> int:
    """The process umask (read without changing it where /proc tells; else set and restored at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path, mode: int = PRIVATE, *, make_parents: bool = False, apply_umask: bool = True):
    """``with atomic_file(path) as staging:`` write ``staging`` (a Path, born with ``mode``); on a clean exit
    it replaces ``path``, on an exception it is removed. ``apply_umask=False``: exactly ``mode`` (an upload
    whose mode the caller decided)."""
    import tempfile  # here, not at the top: reading a file (every inventory load) needs none of it

    target = Path(path)
    if make_parents:
        target.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{target.name}.", dir=os.path.abspath(target.parent))
    try:
        os.fchmod(handle, mode & ~current_umask() if apply_umask else mode)
        os.close(handle)
        yield Path(staging)
        os.replace(staging, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)
        raise


def write_atomic(path, data, mode: int = PRIVATE, *, make_parents: bool = False) -> None:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically with ``mode``."""
    with atomic_file(path, mode, make_parents=make_parents) as staging:
        staging.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def read_named_file(path: str, error: type, what: str, missing: str) -> str:
    """The text of a file the user named, or ``error`` with one line: ``what`` names the file ("inventory
    file"), ``missing`` says what to do when it is absent ("pass --inventory PATH")."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        raise error(f"{path}: {what} not found; {missing}") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder; the {what} is a file") from None
    except PermissionError:
        raise error(f"{path}: not readable by this user; check its owner and mode") from None
    except UnicodeDecodeError:
        raise error(f"{path}: {what} is not UTF-8 text (a binary file?); save it as UTF-8") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
