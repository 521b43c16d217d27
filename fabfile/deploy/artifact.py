"""The artifact a deploy pushes: checked and hashed locally before anything is touched."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

# ELF e_machine values -> what `uname -m` prints on such a machine.
ELF_MACHINES = {3: ("i386", "i686"), 40: ("armv7l", "armv6l"), 62: ("x86_64",), 183: ("aarch64", "arm64"), 243: ("riscv64",)}


class DeployError(Exception):
    """Refused or failed: one line saying what and where."""


@dataclass
class Artifact:
    path: str
    sha256: str
    size: int
    elf_machine: int | None  # None: not an ELF file (a script, say)


def read_artifact(path: str) -> Artifact:
    """Check the file locally: it exists, is not empty; hash it; read its ELF machine if it is ELF."""
    if not os.path.isfile(path):
        raise DeployError(f"--binary {path}: no such file; build it first (e.g. make -C veza-backend-api build)")
    size = os.path.getsize(path)
    if size == 0:
        raise DeployError(f"--binary {path}: file is empty; rebuild it")
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        header = handle.read(20)
        digest.update(header)
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    machine = None
    if header[:4] == b"\x7fELF" and len(header) >= 20:
        machine = int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")
    return Artifact(path=path, sha256=digest.hexdigest(), size=size, elf_machine=machine)
