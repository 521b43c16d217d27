"""What the lab host needs from apt: Incus (from backports on Debian 12), dnsmasq-base, debootstrap.

The mirror is read from the machine's own apt sources at run time; no host name is written here.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from .base import APT_TIMEOUT, INCUS_FROM_BACKPORTS, SUPPORTED_CODENAMES, LabError, run, write_atomically


def host_codename() -> str:
    values = {}
    with open("/etc/os-release", encoding="utf-8") as handle:
        for line in handle:
            key, sep, value = line.strip().partition("=")
            if sep:
                values[key] = value.strip('"')
    codename = values.get("VERSION_CODENAME", "")
    if values.get("ID") != "debian" or codename not in SUPPORTED_CODENAMES:
        raise LabError(f"the lab needs Debian {' or '.join(SUPPORTED_CODENAMES)}; this is {values.get('PRETTY_NAME', 'unknown')}")
    return codename


@dataclass
class AptSource:
    types: list
    uris: list
    suites: list
    components: list
    signed_by: str = ""


def parse_deb822(text: str) -> list:
    """Stanzas of a deb822 ``.sources`` file as dicts (comments and disabled stanzas dropped)."""
    stanzas, current, key = [], {}, None
    for line in text.splitlines() + [""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if current and current.get("enabled", "yes").lower() != "no":
                stanzas.append(current)
            current, key = {}, None
        elif line[0].isspace() and key:
            current[key] += "\n" + line.strip()
        else:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            current[key] = value.strip()
    return stanzas


def parse_one_line_sources(text: str) -> list:
    """``deb [options] URI SUITE COMPONENT...`` lines as AptSource."""
    sources = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        options = ""
        rest = line[4:].strip()
        if rest.startswith("["):
            options, _, rest = rest[1:].partition("]")
        words = rest.split()
        if len(words) < 2:
            continue
        signed_by = next((opt.split("=", 1)[1] for opt in options.split() if opt.startswith("signed-by=")), "")
        sources.append(AptSource(["deb"], [words[0]], [words[1]], words[2:], signed_by))
    return sources


def read_apt_sources() -> list:
    sources = []
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for stanza in parse_deb822(Path(path).read_text(encoding="utf-8")):
            sources.append(AptSource(
                stanza.get("types", "").split(), stanza.get("uris", "").split(), stanza.get("suites", "").split(),
                stanza.get("components", "").split(), stanza.get("signed-by", ""),
            ))
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
        if os.path.exists(path):
            sources.extend(parse_one_line_sources(Path(path).read_text(encoding="utf-8")))
    return sources


def debian_mirror(codename: str) -> AptSource:
    """The configured source carrying ``<codename> main``: the mirror this machine already trusts."""
    for source in read_apt_sources():
        if "deb" in source.types and codename in source.suites and "main" in source.components and source.uris:
            return source
    raise LabError(f"no apt source for '{codename} main' in /etc/apt/sources.list(.d); configure the Debian mirror first")


def has_suite(suite: str) -> bool:
    return any(suite in source.suites and "deb" in source.types for source in read_apt_sources())


def ensure_backports_source(codename: str, mirror: AptSource) -> bool:
    """Add ``<codename>-backports`` on the mirror already configured; True if it was missing."""
    suite = f"{codename}-backports"
    if has_suite(suite):
        return False
    lines = [
        f"# Added by veza ops `inv lab.up`: Incus comes from {suite} on this Debian release.",
        "Types: deb", f"URIs: {mirror.uris[0]}", f"Suites: {suite}", "Components: main",
    ]
    if mirror.signed_by and "\n" not in mirror.signed_by:
        lines.append(f"Signed-By: {mirror.signed_by}")
    write_atomically(Path(f"/etc/apt/sources.list.d/veza-lab-{suite}.sources"), "\n".join(lines) + "\n", 0o644)
    return True


def package_installed(name: str) -> bool:
    done = run(["dpkg-query", "-W", "-f", "${Status}", name], check=False, timeout=30)
    return done.ok and done.stdout.strip() == "install ok installed"


def apt_get(*args) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "-q", *args], timeout=APT_TIMEOUT, env=env)


def required_packages(codename: str) -> list:
    """(package, apt target-release args) for what the lab needs on the host, in install order."""
    incus_target = ["-t", f"{codename}-backports"] if codename in INCUS_FROM_BACKPORTS else []
    return [
        ("incus", incus_target),
        # Only recommended by incus, but Incus refuses to create a managed bridge without it.
        ("dnsmasq-base", []),
        ("debootstrap", []),
    ]


def ensure_packages(codename: str):
    """Incus (from backports on Debian 12), dnsmasq and debootstrap, each only if missing."""
    missing = [(name, target) for name, target in required_packages(codename) if not package_installed(name)]
    if not missing:
        return False, "incus, dnsmasq-base, debootstrap installed"
    done = []
    if any(name == "incus" for name, _ in missing) and codename in INCUS_FROM_BACKPORTS:
        if ensure_backports_source(codename, debian_mirror(codename)):
            done.append(f"added {codename}-backports")
    apt_get("update")
    for name, target in missing:
        if package_installed(name):
            continue  # came in with an earlier package
        apt_get("install", "-y", *target, name)
        done.append(f"installed {name}")
    return True, ", ".join(done)
