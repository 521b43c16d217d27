"""Build one stand-in service from its real source and write it to -o PATH; stdlib only.

    build-demo-api    --version V -o PATH [--broken] [--crash-after S] [--slow-ms N] [--error-rate F] [--pad-mb N]
    build-demo-stream (the same flags)

The version and the variant are baked into the binary at compile time, so a deploy pushes
one self-describing file: the Go API through ``make -C veza-backend-api build`` (link-time
``-X`` flags), the Rust stream server through ``cargo build --release --offline`` with
``VEZA_*`` variables its ``option_env!`` reads. Both toolchains cache, so a variant costs a
relink or a one-crate recompile, not a full build. The same arguments give the same bytes,
so a deploy can tell versions apart by checksum.
"""

import argparse
import fcntl
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: fabfile.files

from fabfile.files import atomic_file  # noqa: E402  (needs the path above)

REPO = Path(__file__).resolve().parent.parent.parent
API_SOURCE = REPO / "veza-backend-api"
STREAM_SOURCE = REPO / "stream-server"
MIB = 1024 * 1024
# Safe to pass through make, -ldflags and a JSON answer without quoting.
VERSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}")
MAX_CRASH_AFTER = 24 * 3600
MAX_SLOW_MS = 60_000
BUILD_TIMEOUT = 600  # seconds; a cold Go build (std recompiled without cgo) takes 10-25 s on two cores


class BuildError(Exception):
    """A build step failed; the message is the one line to print."""


class OneLineParser(argparse.ArgumentParser):
    """Bad usage prints one ``error:`` line and exits 2 (argparse would add the usage text)."""

    def error(self, message):
        self.exit(2, f"error: {message}\n")


def parse_args(program: str, argv: list):
    parser = OneLineParser(prog=program, description=f"Build the {program} stand-in as one executable file.")
    parser.add_argument("--version", required=True, help="version the program reports (letters, digits, ._+~-)")
    parser.add_argument("-o", "--output", required=True, help="path of the executable to write")
    parser.add_argument("--broken", action="store_true", help="the program exits 1 at start (failed-deploy drills)")
    parser.add_argument("--crash-after", type=int, default=0, metavar="SECONDS",
                        help="the program serves, then exits 1 this long after start (late-crash drills)")
    parser.add_argument("--slow-ms", type=int, default=0, metavar="N", help="every request is answered N ms late")
    parser.add_argument("--error-rate", type=float, default=0.0, metavar="FRACTION",
                        help="that share of requests (all but the health path) is answered 500, e.g. 0.2")
    parser.add_argument("--pad-mb", type=int, default=0, metavar="N",
                        help="append N MiB of padding after the ELF (deploy benchmarks); the program still runs")
    args = parser.parse_args(argv)
    if not VERSION_PATTERN.fullmatch(args.version):
        parser.error(f"--version must match {VERSION_PATTERN.pattern}")
    if not 0 <= args.crash_after <= MAX_CRASH_AFTER:
        parser.error(f"--crash-after must be between 0 (off) and {MAX_CRASH_AFTER}")
    if not 0 <= args.slow_ms <= MAX_SLOW_MS:
        parser.error(f"--slow-ms must be between 0 (off) and {MAX_SLOW_MS}")
    if not 0 <= args.error_rate <= 1:  # also refuses nan
        parser.error("--error-rate must be a fraction between 0 (off) and 1")
    if args.pad_mb < 0:
        parser.error("--pad-mb must be 0 or more")
    return args


def baked_values(args) -> dict:
    """What the program bakes in; every key always set, so nothing leaks in from the caller's environment."""
    return {
        "VERSION": args.version,
        "BROKEN": "1" if args.broken else "",
        "CRASH_AFTER": str(args.crash_after) if args.crash_after else "",
        "SLOW_MS": str(args.slow_ms) if args.slow_ms else "",
        "ERROR_RATE": repr(args.error_rate) if args.error_rate else "",
    }


def tool(name: str, hint: str, override: str = "") -> str:
    """The toolchain command: $override if set (CARGO=/usr/bin/cargo, say), else ``name`` on PATH."""
    found = (override and os.environ.get(override)) or shutil.which(name)
    if not found:
        raise BuildError(f"{name} not found on PATH; {hint}")
    return found


def run_build(command: list, cwd: Path, env: dict) -> None:
    """Run a compiler quietly; on failure show its output, since that is where the reason is."""
    try:
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BuildError(f"{command[0]} took more than {BUILD_TIMEOUT}s") from None
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise BuildError(f"{' '.join(command[:2])} failed (exit {done.returncode}) in {cwd}")


def build_api(values: dict, staging: Path) -> None:
    """Go: make passes the values to -ldflags -X; the build cache makes a variant a relink."""
    make = tool("make", "Debian: apt-get install make")
    go = tool("go", "Debian: apt-get install golang-go", override="GO")
    settings = [f"{key}={value}" for key, value in values.items()]
    # Called from `make demo-binaries VERSION=...`, the outer make's variables would reach this
    # make through MAKEFLAGS; the values given here are the only ones that count.
    env = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    run_build([make, "-s", "build", f"GO={go}", f"OUT={staging}", *settings], API_SOURCE, env)


def build_stream(values: dict, staging: Path) -> None:
    """Rust: cargo rebuilds the one crate when a VEZA_* value changes (rustc records them)."""
    cargo = tool("cargo", "Debian: apt-get install cargo", override="CARGO")
    env = {**os.environ, **{f"VEZA_{key}": value for key, value in values.items()}}
    target = STREAM_SOURCE / "target"
    target.mkdir(exist_ok=True)
    # Builders share target/release/stream-server: hold the lock from the build until it is copied.
    with open(target / ".build-demo-stream.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        run_build([cargo, "build", "--release", "--offline", "--quiet"], STREAM_SOURCE, env)
        shutil.copyfile(target / "release" / "stream-server", staging)


def padding(size: int, seed: str) -> bytes:
    """``size`` pseudo-random bytes: a compressing transfer cannot shrink a benchmark, yet reproducible."""
    return random.Random(seed).randbytes(size)


def write_atomically(path: Path, build, pad: bytes) -> None:
    """Build next to the target and rename (``fabfile.files``), so a half-written program never exists under
    its name."""
    with atomic_file(path, 0o755, make_parents=True, apply_umask=False) as staging:
        build(staging)
        with open(staging, "ab") as out:
            out.write(pad)  # the kernel maps what the ELF headers name; trailing bytes are ignored
        os.chmod(staging, 0o755)  # the compiler may have written a new file with its own mode


def describe(program: str, args) -> str:
    variant = [name for name, wanted in (("broken", args.broken), (f"crash-after {args.crash_after}s", args.crash_after),
                                         (f"slow {args.slow_ms}ms", args.slow_ms),
                                         (f"error rate {args.error_rate:g}", args.error_rate)) if wanted]
    return f"{program} {args.version}{' (' + ', '.join(variant) + ')' if variant else ''}"


def main(program: str, argv: list) -> int:
    args = parse_args(program, argv)
    build = build_api if program == "veza-api" else build_stream
    values = baked_values(args)
    pad = padding(args.pad_mb * MIB, f"{program}:{args.version}:{args.pad_mb}") if args.pad_mb else b""
    output = Path(args.output)
    try:
        write_atomically(output, lambda staging: build(values, staging), pad)
    except (BuildError, OSError) as failure:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    print(f"{describe(program, args)}: {output} ({output.stat().st_size} bytes)", file=sys.stderr)
    return 0
