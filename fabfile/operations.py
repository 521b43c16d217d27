"""The vocabulary roles are written in: small idempotent operations.

Each operation is a function returning an ``Operation``: a read-only ``probe``
(a shell snippet whose output is the fact, or a ``facts.Fact`` that the probes of
one host ask together with the others of its kind) and a ``decide`` function that
turns that fact into the actions needed, none when the host is already right. The
runner batches the probes of a play into one round trip per host, so a no-op
run costs almost nothing, and ``--check`` simply stops before the actions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .facts import Fact, file_fact, packages_fact, stat_fact, unit_fact
from .shell import RUN_ID, Command, Upload, q


@dataclass
class Operation:
    name: str
    probe: str | Fact
    decide: Callable[[str], Iterable]
    notify: list = field(default_factory=list)
    # For --diff: the new text of a file, the remote path whose current text it replaces, and how
    # to show the difference: "content" (a unified diff) or "keys" (KEY: changed, for files holding secrets).
    diff_path: str | None = None
    diff_new: str | None = None
    diff_mode: str = "content"
    # Preconditions run before every other step of the play, so a host that fails one is left unchanged.
    precondition: bool = False


def _mode(value) -> str:
    """Normalise a mode to four octal digits, as stat prints it after zero-padding."""
    return format(int(str(value), 8), "04o")


def group(name: str, gid: int | None = None) -> Operation:
    """Ensure a system group exists.

    + name: group name
    + gid: numeric id to create it with (left alone if the group exists)
    """

    def decide(fact):
        if fact.strip():
            return
        yield Command(f"groupadd --system {'--gid ' + q(gid) + ' ' if gid is not None else ''}{q(name)}")

    return Operation(f"group {name}", f"getent group {q(name)} || true", decide)


def system_user(name: str, group_name: str, uid: int | None = None, home: str = "/nonexistent",
                shell: str = "/usr/sbin/nologin") -> Operation:
    """Ensure a system user with no login shell and no home directory.

    + name: user name
    + group_name: its primary group (must exist: put ``group()`` first)
    + uid: numeric id to create it with
    + home: home path recorded in passwd; never created
    + shell: login shell, nologin by default
    """

    def decide(fact):
        fields = fact.strip().split(":")
        if len(fields) < 7:
            yield Command(
                f"useradd --system --no-create-home --home-dir {q(home)} --shell {q(shell)} "
                f"--gid {q(group_name)} {'--uid ' + q(uid) + ' ' if uid is not None else ''}{q(name)}"
            )
        elif fields[6] != shell or fields[5] != home:
            yield Command(f"usermod --shell {q(shell)} --home {q(home)} --gid {q(group_name)} {q(name)}")

    probe = f"getent passwd {q(name)} || true"
    return Operation(f"user {name}", probe, decide)


def directory(path: str, owner: str = "root", group: str = "root", mode="0755") -> Operation:
    """Ensure a directory exists with owner, group and mode.

    + path: absolute path; parents are created as root
    + owner, group: names
    + mode: octal string or int
    """
    wanted = f"{owner} {group} {_mode(mode)}"

    def decide(fact):
        if _normalise_stat(fact) == wanted:
            return
        yield Command(f"install -d -o {q(owner)} -g {q(group)} -m {q(_mode(mode))} {q(path)}")

    return Operation(f"directory {path}", stat_fact(path), decide)


def _normalise_stat(fact: str) -> str:
    parts = fact.split()
    if len(parts) != 3:
        return fact.strip()
    return f"{parts[0]} {parts[1]} {_mode(parts[2])}"


def file(path: str, content: bytes | str, *, owner: str = "root", group: str = "root", mode="0644",
         validate: str | None = None, backup: bool = False, after: Iterable[str] = (),
         notify: Iterable[str] = (), diff_mode: str = "content") -> Operation:
    """Ensure a file has exactly ``content``, uploaded atomically.

    + path: absolute target path
    + content: the wanted bytes (a rendered template, say)
    + owner, group, mode: wanted attributes
    + validate: command run on the uploaded temporary file before it replaces the
      target; ``{path}`` stands for that file (quoted). A failure leaves the target untouched.
    + backup: keep the replaced file as ``<path>.prev`` (for a handler to restore)
    + after: commands to run once the file changed (e.g. ``systemctl daemon-reload``)
    + notify: handlers to run at the end of the role when it changed
    + diff_mode: "content" (unified diff), "keys" (only which KEY= lines change: files holding
      secrets), or "none"
    """
    data = content.encode() if isinstance(content, str) else content
    digest = hashlib.sha256(data).hexdigest()
    mode = _mode(mode)
    temporary = f"{path}.veza-tmp-{RUN_ID}"

    def decide(fact):
        lines = fact.split("\n")
        current_digest = lines[0].strip()
        current_attrs = _normalise_stat(lines[1]) if len(lines) > 1 else ""
        wanted_attrs = f"{owner} {group} {mode}"
        if current_digest == digest:
            if current_attrs != wanted_attrs:
                yield Command(f"chown {q(owner + ':' + group)} {q(path)} && chmod {q(mode)} {q(path)}")
            return
        yield Upload(data, temporary, "0600")
        steps = [f"chown {q(owner + ':' + group)} {q(temporary)}", f"chmod {q(mode)} {q(temporary)}"]
        if validate:
            steps.append(f"{{ {validate.format(path=q(temporary))} ; }} || {{ rc=$?; rm -f {q(temporary)}; exit $rc; }}")
        if backup:
            steps.append(f"if [ -e {q(path)} ]; then cp -p {q(path)} {q(path + '.prev')}; fi")
        steps.append(f"mv -f {q(temporary)} {q(path)}")
        steps.extend(after)
        yield Command(" && ".join(steps))

    return Operation(
        f"file {path}", file_fact(path), decide, notify=list(notify),
        diff_path=path if diff_mode != "none" else None,
        diff_new=data.decode(errors="replace") if diff_mode != "none" else None,
        diff_mode=diff_mode,
    )


def systemd_unit(name: str, content: str, notify: Iterable[str] = ()) -> Operation:
    """Ensure ``/etc/systemd/system/<name>`` has ``content``; daemon-reload only when it changed.

    + name: unit file name, e.g. ``veza-backend-api.service``
    + content: the rendered unit
    + notify: handlers to run when it changed (a restart, typically)
    """
    path = f"/etc/systemd/system/{name}"
    operation = file(path, content, mode="0644", after=["systemctl daemon-reload"], notify=notify)
    operation.name = f"unit {name}"
    return operation


def apt_packages(packages: Iterable[str], *, lists_max_age: int = 3600) -> Operation:
    """Ensure Debian packages are installed; refresh the lists only when something is missing.

    + packages: package names
    + lists_max_age: seconds; older package lists are refreshed before installing
    """
    packages = list(packages)

    def decide(fact):
        installed = {line.split()[0] for line in fact.splitlines() if line.endswith(" installed")}
        missing = [p for p in packages if p not in installed]
        if not missing:
            return
        yield Command(
            f"{_refresh_lists_if_older(lists_max_age)} && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
            f"--no-install-recommends {' '.join(q(p) for p in missing)}"
        )

    return Operation(f"packages {', '.join(packages)}", packages_fact(packages), decide)


# apt itself leaves no reliable "last updated" time (an unchanged list is not rewritten),
# so every refresh we run touches this stamp and its age is what we compare.
APT_STAMP = "/var/lib/apt/veza-lists.stamp"
# Without the description translations (Translation-*, some 30 MB for bookworm main): installs never read
# them, and fetching them was three quarters of a fresh host's refresh on the lab.
APT_UPDATE = f"apt-get update -q -o Acquire::Languages=none >/dev/null && touch {APT_STAMP}"


def _lists_age_probe() -> str:
    return f"if [ -e {APT_STAMP} ]; then echo $(( $(date +%s) - $(stat -c %Y {APT_STAMP}) )); else echo absent; fi"


def _refresh_lists_if_older(max_age: int) -> str:
    return (
        f"age=$({_lists_age_probe()}); "
        f"if [ \"$age\" = absent ] || [ \"$age\" -gt {int(max_age)} ]; then "
        f"{APT_UPDATE}; fi"
    )


def apt_lists_fresh(max_age: int = 86400) -> Operation:
    """Refresh the apt package lists when they are older than ``max_age`` seconds (or never refreshed).

    + max_age: seconds
    """

    def decide(fact):
        fact = fact.strip()
        if fact.isdigit() and int(fact) <= max_age:
            return
        yield Command(APT_UPDATE)

    return Operation(f"apt lists fresh (max age {max_age}s)", _lists_age_probe(), decide)


def timezone(name: str = "Etc/UTC") -> Operation:
    """Ensure /etc/localtime points at ``name`` and /etc/timezone says it."""
    zone_file = f"/usr/share/zoneinfo/{name}"
    probe = "readlink /etc/localtime; cat /etc/timezone 2>/dev/null || true"

    def decide(fact):
        lines = fact.split("\n")
        if lines[0].strip() == zone_file and len(lines) > 1 and lines[1].strip() == name:
            return
        yield Command(f"ln -sfn {q(zone_file)} /etc/localtime && echo {q(name)} > /etc/timezone")

    return Operation(f"timezone {name}", probe, decide)


def service(name: str, *, enabled: bool = True, running: bool | None = True) -> Operation:
    """Ensure a systemd service is enabled and started (or neither).

    + name: unit name
    + enabled: start at boot
    + running: active now; None leaves it as it is (a deploy starts it)
    """
    # Both states from one systemctl call (is-enabled then is-active cost two): KEY=VALUE lines.

    def decide(fact):
        states = dict(line.strip().partition("=")[::2] for line in fact.splitlines())
        is_enabled = states.get("UnitFileState") == "enabled"
        is_active = states.get("ActiveState") == "active"
        if enabled and not is_enabled:
            yield Command(f"systemctl enable {q(name)} >/dev/null 2>&1")
        if not enabled and is_enabled:
            yield Command(f"systemctl disable {q(name)} >/dev/null 2>&1")
        if running and not is_active:
            # A unit that hit its start limit (a package's first start with its default settings, say)
            # refuses `start` until its failed state is reset.
            reset = f"systemctl reset-failed {q(name)}; " if states.get("ActiveState") == "failed" else ""
            yield Command(f"{reset}systemctl start {q(name)}")
        if running is False and is_active:
            yield Command(f"systemctl stop {q(name)}")

    return Operation(f"service {name}", unit_fact(name), decide)


def assert_that(name: str, test: str, message: str) -> Operation:
    """Fail the host before any change unless the shell ``test`` succeeds.

    + name: what is being checked
    + test: shell condition, e.g. ``test -f /etc/ssl/x.pem``
    + message: shown when it fails
    """
    probe = f"if {test}; then echo yes; else echo no; fi"

    def decide(fact):
        if fact.strip() != "yes":
            raise PreconditionFailed(message)
        return ()

    return Operation(name, probe, decide, precondition=True)


class PreconditionFailed(Exception):
    """A host is not in a state the role can work from."""
