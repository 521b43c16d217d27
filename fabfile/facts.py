"""Facts: what operations ask a host before deciding, asked in one round trip per host. Pure: it builds the
probe script and reads its output; the runner runs it.

An operation's probe is a shell snippet (its output is the fact) or a ``Fact``: a question of a kind many
operations ask (a path's owner and mode, a file's digest, packages, systemd units). The ``ProbeBatch``
asks each kind once for all its subjects (one ``stat``, one ``sha256sum``, one ``dpkg-query``, one
``systemctl show`` per host instead of one or three processes per operation: a no-op run of a balancer's
22 steps went from about 35 processes on the host to 11) and hands every operation the same text its
question asked alone prints, so ``decide`` reads it the same way. A subject the batched output could not
carry unambiguously (a path with a newline or a backslash, an unusual package or unit name) is asked
alone. Identical snippets run once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .shell import q

FACT_MARKER = "@@veza-fact@@"
STAT_FORMAT = "%U %G %a"
_PLAIN_PATH = re.compile(r"/[^\x00-\x1f\x7f\\]*")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9+.:@_-]*")


@dataclass(frozen=True)
class Fact:
    """One question of a batchable kind; its fact is the text ``alone`` prints on the host.

    + kind: "stat" (owner, group and mode of a path, not following a symlink, or "missing"), "file"
      (a file's sha256 then that stat line, or "missing" when the path does not exist), "packages"
      (dpkg's "NAME STATUS" lines for these packages), "units" (systemd's ActiveState and UnitFileState)
    + subjects: the paths, package or unit names it is about
    """

    kind: str
    subjects: tuple

    @property
    def alone(self) -> str:
        """The same question as a shell snippet of its own."""
        if self.kind == "stat":
            return f"stat -c '{STAT_FORMAT}' {q(self.subjects[0])} 2>/dev/null || echo missing"
        if self.kind == "file":
            path = q(self.subjects[0])
            return (f"if [ -e {path} ]; then sha256sum {path} | cut -d' ' -f1; stat -c '{STAT_FORMAT}' {path}; "
                    "else echo missing; fi")
        if self.kind == "packages":
            return f"dpkg-query -W -f='${{Package}} ${{db:Status-Status}}\\n' {' '.join(map(q, self.subjects))} 2>/dev/null || true"
        if self.kind == "units":
            return f"systemctl show -p UnitFileState -p ActiveState {q(self.subjects[0])} 2>/dev/null; true"
        raise ValueError(f"unknown fact kind {self.kind!r}")

    @property
    def batchable(self) -> bool:
        if self.kind in ("stat", "file"):
            return all(_PLAIN_PATH.fullmatch(path) for path in self.subjects)
        return all(_PLAIN_NAME.fullmatch(name) for name in self.subjects)


def stat_fact(path: str) -> Fact:
    return Fact("stat", (path,))


def file_fact(path: str) -> Fact:
    return Fact("file", (path,))


def packages_fact(names) -> Fact:
    return Fact("packages", tuple(names))


def unit_fact(name: str) -> Fact:
    return Fact("units", (name,))


def _unique(items) -> list:
    return list(dict.fromkeys(items))


class ProbeBatch:
    """The probes of some operations as one script, and each one's fact read back from its output."""

    def __init__(self, probes):
        self.probes = [probe.alone if isinstance(probe, Fact) and not probe.batchable else probe for probe in probes]
        facts = [probe for probe in self.probes if isinstance(probe, Fact)]
        self.subjects = {kind: _unique(s for fact in facts if fact.kind in kinds for s in fact.subjects)
                         for kind, kinds in (("stat", ("stat", "file")), ("file", ("file",)),
                                             ("packages", ("packages",)), ("units", ("units",)))}
        self.snippets = _unique(probe for probe in self.probes if isinstance(probe, str))

    def __len__(self) -> int:
        return len(self.probes)

    def script(self) -> str:
        """One shell script printing each section's output after a marker line."""
        sections = []

        def section(name, command):
            sections.append(f"printf '\\n%s %s\\n' {FACT_MARKER} {name}; {command}")

        paths, files = self.subjects["stat"], self.subjects["file"]
        if paths:
            section("stat", f"stat -c '{STAT_FORMAT} %n' -- {' '.join(map(q, paths))} 2>/dev/null")
        if files:
            names = " ".join(map(q, files))
            # [ -e ] follows a symlink as the single probe's test does; the shell's builtins, no process.
            section("exists", f"for p in {names}; do if [ -e \"$p\" ]; then printf '%s\\n' \"$p\"; fi; done")
            section("sha256", f"sha256sum -- {names} 2>/dev/null")
        if self.subjects["packages"]:
            section("packages", "dpkg-query -W -f='${Package} ${db:Status-Status}\\n' "
                                f"{' '.join(map(q, self.subjects['packages']))} 2>/dev/null")
        if self.subjects["units"]:
            section("units", "systemctl show -p UnitFileState -p ActiveState "
                             f"{' '.join(map(q, self.subjects['units']))} 2>/dev/null")
        for index, snippet in enumerate(self.snippets):
            section(str(index), f"( {snippet} ) 2>/dev/null")
        return "\n".join(sections)

    def facts(self, output: str) -> list:
        """One fact string per probe, in order ("" for one the output does not carry)."""
        sections = {}
        for chunk in output.split(f"\n{FACT_MARKER} ")[1:]:
            name, _, text = chunk.partition("\n")
            sections[name] = text.rstrip("\n")
        stats = _keyed(sections.get("stat", ""), lambda line: line.split(" ", 3), 3)
        digests = _keyed(sections.get("sha256", ""), lambda line: [line[:64], line[66:]], 1)
        existing = set(sections.get("exists", "").split("\n"))
        packages = [line for line in sections.get("packages", "").split("\n") if line]
        units = [block.strip("\n") for block in sections.get("units", "").split("\n\n") if block.strip()]
        if len(units) != len(self.subjects["units"]):
            units = [""] * len(self.subjects["units"])  # systemctl said nothing usable: as each would alone
        unit_states = dict(zip(self.subjects["units"], units))

        def answer(probe):
            if isinstance(probe, str):
                return sections.get(str(self.snippets.index(probe)), "")
            subject = probe.subjects[0]
            if probe.kind == "stat":
                return stats.get(subject, "missing")
            if probe.kind == "file":  # a line each for what sha256sum and stat printed, as alone
                lines = (digests.get(subject), stats.get(subject))
                return "\n".join(line for line in lines if line) if subject in existing else "missing"
            if probe.kind == "packages":
                return "\n".join(line for line in packages if line.split(" ", 1)[0] in probe.subjects)
            return unit_states.get(subject, "")

        return [answer(probe) for probe in self.probes]


def _keyed(text: str, split, value_fields: int) -> dict:
    """``{path: value}`` from lines of value fields then the path (as ``stat %n`` and ``sha256sum`` print it)."""
    keyed = {}
    for line in text.split("\n"):
        parts = split(line)
        if len(parts) == value_fields + 1 and parts[-1]:
            keyed[parts[-1]] = " ".join(parts[:-1])
    return keyed
