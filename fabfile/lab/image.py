"""The Debian base image: debootstrap once, cached under .lab/image, imported under its alias."""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from subprocess import STDOUT

import yaml

from ..process import TimeoutExpired, start_argv
from .base import (BASE_PACKAGES, BUILD_TIMEOUT, HEARTBEAT, IMAGE_CACHE, INCUS, LAB_DIR, LabError, Progress,
                   display_path, run, tail)
from .host_packages import debian_mirror
from .settings import LabSettings


SSH_HOST_KEYS_UNIT = """\
[Unit]
Description=Generate this container's own SSH host keys (the image ships none)
Before=ssh.service

[Service]
Type=oneshot
# Only creates the key types that are missing, so later boots do nothing.
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=ssh.service
"""

HOSTS_TEMPLATE = """\
127.0.0.1 localhost
127.0.1.1 {{ instance.name }}
::1 localhost ip6-localhost ip6-loopback
"""


def image_exists(alias: str) -> bool:
    return INCUS.query(f"/1.0/images/aliases/{alias}") is not None


def ensure_image(settings: LabSettings, codename: str):
    """Import the base image under its alias, building it first unless a cached build exists."""
    if image_exists(settings.image):
        return False, f"image {settings.image}"
    cache = IMAGE_CACHE / settings.image
    built = ""
    if not (cache / "meta.tar").exists() or not (cache / "rootfs.tar").exists():
        build_image(cache, codename, debian_mirror(codename).uris[0])
        built = "built and "
    started = time.monotonic()
    INCUS.run("image", "import", str(cache / "meta.tar"), str(cache / "rootfs.tar"), "--alias", settings.image, timeout=600)
    Progress.note(f"imported in {time.monotonic() - started:.1f}s")
    return True, f"{built}imported {settings.image}"


def build_image(cache: Path, codename: str, mirror: str) -> None:
    """debootstrap into a scratch directory, pack it, then move the result into the cache in one rename."""
    LAB_DIR.mkdir(exist_ok=True)
    for leftover in LAB_DIR.glob("image-build-*"):
        remove_tree(leftover)
    work = Path(tempfile.mkdtemp(prefix="image-build-", dir=LAB_DIR))
    try:
        rootfs = work / "rootfs"
        log = LAB_DIR / "debootstrap.log"
        timed_note("debootstrap", lambda: run_with_heartbeat(
            ["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", codename, str(rootfs), mirror],
            log, "debootstrap", BUILD_TIMEOUT,
        ), f"log {display_path(log)}")
        prepare_rootfs(rootfs)
        timed_note("pack rootfs", lambda: run(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(work / "rootfs.tar"), "."], timeout=600,
        ))
        write_metadata(work, codename)
        remove_tree(rootfs)
        staging = work / "out"
        staging.mkdir()
        for name in ("meta.tar", "rootfs.tar"):
            os.replace(work / name, staging / name)
        cache.parent.mkdir(parents=True, exist_ok=True)
        remove_tree(cache)
        os.replace(staging, cache)
    finally:
        remove_tree(work)


def timed_note(label: str, action, detail: str = "") -> None:
    started = time.monotonic()
    Progress.note(f"{label}: started {detail}".rstrip())
    action()
    Progress.note(f"{label}: done in {time.monotonic() - started:.1f}s")


def run_with_heartbeat(argv: list, log_path: Path, label: str, timeout: float) -> None:
    """Run a long command into a log file, printing its latest log line every few seconds."""
    with open(log_path, "wb") as log:
        process = start_argv(argv, stdout=log, stderr=STDOUT)
    started = time.monotonic()
    try:
        while True:
            try:
                code = process.wait(timeout=HEARTBEAT)
                break
            except TimeoutExpired:
                elapsed = time.monotonic() - started
                if elapsed > timeout:
                    raise LabError(f"{label} took over {timeout}s; see {display_path(log_path)}") from None
                Progress.note(f"{label}: {elapsed:4.0f}s  {last_line(log_path)}")
    except BaseException:
        # Timeout or Ctrl-C: stop it before the caller removes the directory it is writing into.
        process.kill()
        process.wait(timeout=30)
        raise
    if code != 0:
        raise LabError(f"{label} failed (exit {code}); last lines of {display_path(log_path)}: {tail(log_path.read_text(errors='replace'), 5)}")


def last_lines(path: Path, count: int) -> str:
    """The end of a log file, headed by its name, for an error message."""
    lines = path.read_text(errors="replace").splitlines()[-count:] if path.exists() else ["(missing)"]
    return "\n".join([f"--- {display_path(path)}", *lines])


def last_line(path: Path) -> str:
    lines = path.read_text(errors="replace").strip().splitlines()
    return lines[-1][:100] if lines else ""


def prepare_rootfs(rootfs: Path) -> None:
    """Make the tree an image: no shared identity (host keys, machine-id), sshd able to start."""
    for key in (rootfs / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    units = rootfs / "etc" / "systemd" / "system"
    (units / "ssh-host-keys.service").write_text(SSH_HOST_KEYS_UNIT, encoding="utf-8")
    wants = units / "ssh.service.wants"
    wants.mkdir(exist_ok=True)
    link = wants / "ssh-host-keys.service"
    if not link.is_symlink():
        link.symlink_to("/etc/systemd/system/ssh-host-keys.service")
    # An empty machine-id makes systemd generate a fresh one at each container's first boot.
    (rootfs / "etc" / "machine-id").write_text("", encoding="utf-8")
    dbus_id = rootfs / "var" / "lib" / "dbus" / "machine-id"
    if dbus_id.exists() and not dbus_id.is_symlink():
        dbus_id.unlink()
    for package in (rootfs / "var" / "cache" / "apt" / "archives").glob("*.deb"):
        package.unlink()


def write_metadata(work: Path, codename: str) -> None:
    """metadata.yaml and the templates Incus renders at creation (hostname, hosts), packed as meta.tar."""
    meta = work / "meta"
    (meta / "templates").mkdir(parents=True)
    metadata = {
        "architecture": platform.machine(),
        "creation_date": int(time.time()),
        "properties": {
            "os": "debian", "release": codename, "variant": "minbase",
            "description": f"Debian {codename} minbase with systemd and openssh (veza lab)",
        },
        "templates": {
            "/etc/hostname": {"when": ["create", "copy"], "template": "hostname.tpl"},
            "/etc/hosts": {"when": ["create", "copy"], "template": "hosts.tpl"},
        },
    }
    (meta / "metadata.yaml").write_text(yaml.safe_dump(metadata), encoding="utf-8")
    (meta / "templates" / "hostname.tpl").write_text("{{ instance.name }}\n", encoding="utf-8")
    (meta / "templates" / "hosts.tpl").write_text(HOSTS_TEMPLATE, encoding="utf-8")
    run(["tar", "--numeric-owner", "-C", str(meta), "-cf", str(work / "meta.tar"), "metadata.yaml", "templates"])


def remove_tree(path: Path) -> None:
    """Delete a build directory, first unmounting what an interrupted debootstrap left mounted in it."""
    if not path.exists():
        return
    resolved = str(path.resolve())
    with open("/proc/mounts", encoding="utf-8") as handle:
        mounts = [line.split()[1] for line in handle]
    for mount in sorted((m for m in mounts if m == resolved or m.startswith(resolved + "/")), reverse=True):
        run(["umount", "-l", mount], check=False, timeout=30)
    shutil.rmtree(path, ignore_errors=True)
