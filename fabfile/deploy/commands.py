"""What a deploy runs on an instance, as data: one ``ServiceCommands`` per instance.

Pure: every method returns a ``shell.Command`` (or parses a command's output);
``rollout.Instance`` carries them out through the instance's transport. The
deploy unit tests compare these values, as Kamal's command tests do.
"""

from __future__ import annotations

from ..shell import RUN_ID, Command, q

FACT_LINES = ("machine", "sha256", "prev_sha256", "unit", "running_sha256")


class ServiceCommands:
    """The commands of one service instance; ``settings`` is its ``services.ServiceSettings``."""

    def __init__(self, settings, run_id: str = RUN_ID):
        self.settings = settings
        self.binary = settings.binary_path
        self.prev = f"{self.binary}.prev"
        # Per run: two deploys (or a leftover of an interrupted one) never share a temporary file.
        self.incoming = f"{self.binary}.veza-new-{run_id}"
        self.spare = f"{self.binary}.veza-swap-{run_id}"

    def facts(self) -> Command:
        """One round trip: machine, sha256 of the live and previous binaries, unit state, and the
        sha256 of what the unit's main process actually executes (``none`` when it is not running)."""
        unit = q(self.settings.unit)
        return Command(
            f"uname -m; (sha256sum {q(self.binary)} 2>/dev/null || echo none) | cut -d' ' -f1; "
            f"(sha256sum {q(self.prev)} 2>/dev/null || echo none) | cut -d' ' -f1; "
            f"systemctl is-active {unit} 2>/dev/null || true; "
            f"{self._running_sha256_script()}"
        )

    def _running_sha256_script(self) -> str:
        """sha256 of /proc/<MainPID>/exe. A script's exe is its interpreter: then, when the interpreter's
        script argument is the binary's path and the process started after the binary was renamed into
        place (its ctime), the binary's own sha256 stands for what runs (hashed only then: one hash of
        a large binary per probe, not two)."""
        unit, binary = q(self.settings.unit), q(self.binary)
        return (f"pid=$(systemctl show -p MainPID --value {unit} 2>/dev/null); "
                f"if [ -n \"$pid\" ] && [ \"$pid\" != 0 ]; then "
                f"if [ \"$(tr '\\0' '\\n' < /proc/$pid/cmdline 2>/dev/null | sed -n 2p)\" = {binary} ] "
                f"&& [ \"$(stat -c %Y /proc/$pid 2>/dev/null || echo 0)\" -ge \"$(stat -c %Z {binary} 2>/dev/null || echo 0)\" ]; "
                f"then sha=$( (sha256sum {binary} 2>/dev/null || echo none) | cut -d' ' -f1); "
                f"else sha=$( (sha256sum /proc/$pid/exe 2>/dev/null || echo none) | cut -d' ' -f1); fi; "
                f"echo \"$sha\"; else echo none; fi")

    @staticmethod
    def parse_facts(stdout: str) -> dict:
        lines = (stdout.splitlines() + [""] * len(FACT_LINES))[:len(FACT_LINES)]
        facts = dict(zip(FACT_LINES, (line.strip() for line in lines)))
        facts["unit"] = facts["unit"] or "unknown"
        facts["running_sha256"] = facts["running_sha256"] or "none"
        return facts

    def identity_probe(self) -> Command:
        """The sha256 of the main process's executable (proves the pushed bytes are what runs), then how
        often systemd restarted the unit since the deploy's restart (``restart`` resets that count): a
        binary that dies at start shows as a crash loop at once."""
        return Command(f"{self._running_sha256_script()}; "
                       f"systemctl show -p NRestarts --value {q(self.settings.unit)} 2>/dev/null; true")

    @staticmethod
    def parse_identity(stdout: str) -> tuple:
        """(running sha256, systemd restarts since the deploy's restart) from ``identity_probe``."""
        sha, _, restarts = stdout.strip().partition("\n")
        return sha.strip() or "none", int(restarts) if restarts.strip().isdigit() else 0

    def health(self) -> Command:
        """The health path asked on the instance itself; stdout is the body, then the status code."""
        url = f"http://127.0.0.1:{self.settings.listen_port}{self.settings.health_path}"
        return Command(f"curl -s -m 2 -w '\\n%{{http_code}}' {q(url)}")

    def soak_probe(self) -> Command:
        """One round trip for the soak: the unit's main PID (a crash and restart changes it), then the
        health answer as ``health`` prints it."""
        return Command(f"systemctl show -p MainPID --value {q(self.settings.unit)}; {self.health().command}")

    @classmethod
    def parse_soak_probe(cls, stdout: str) -> tuple:
        """(main PID, HTTP status) from ``soak_probe``'s output."""
        pid, _, rest = stdout.partition("\n")
        return pid.strip() or "0", cls.parse_health(rest)[0]

    @staticmethod
    def parse_health(stdout: str) -> tuple:
        body, _, code = stdout.rpartition("\n")
        return code.strip(), body

    def stage_incoming(self, sha256: str) -> Command:
        """After the upload, while the instance still serves: verify the bytes and make them the
        service's (root-owned, 0755), still under this run's temporary name."""
        incoming = q(self.incoming)
        return Command(
            f"actual=$(sha256sum {incoming} | cut -d' ' -f1); "
            f"if [ \"$actual\" != {q(sha256)} ]; then rm -f {incoming}; "
            f"echo \"sha256 mismatch after upload: $actual\" >&2; exit 3; fi; "
            f"chown root:{q(self.settings.user)} {incoming} && chmod 0755 {incoming}"
        )

    def install_incoming(self) -> Command:
        """Once the instance is out: keep the live binary as .prev, rename the staged one into place
        (the identity gate later proves the process runs the verified bytes)."""
        incoming, binary = q(self.incoming), q(self.binary)
        return Command(
            f"test -f {incoming} || {{ echo \"staged binary {self.incoming} is gone\" >&2; exit 3; }}; "
            f"if [ -e {binary} ]; then ln -f {binary} {q(self.prev)}; fi && mv -f {incoming} {binary}"
        )

    def discard_leftovers(self) -> Command:
        """Temporary files any earlier run left behind (the deploy lock means no other run is using them)."""
        binary = q(self.binary)
        return Command(f"rm -f {binary}.veza-new-* {binary}.veza-swap-*")

    def discard_incoming(self) -> Command:
        return Command(f"rm -f {q(self.incoming)}")

    def swap_with_prev(self) -> Command:
        """Make .prev the live binary and the live one .prev (rollback, and rollback of a rollback)."""
        binary, prev, spare = q(self.binary), q(self.prev), q(self.spare)
        return Command(f"ln -f {binary} {spare} && mv -f {prev} {binary} && mv -f {spare} {prev}")

    def restore_prev(self) -> Command:
        """Put .prev back as the live binary (after a failed deploy)."""
        return Command(f"mv -f {q(self.prev)} {q(self.binary)}")

    def restart(self) -> Command:
        """Restart the unit; ``reset-failed`` first so a crash loop that hit systemd's start limit
        (a broken binary restarting every RestartSec) cannot refuse the restart of the rollback."""
        unit = q(self.settings.unit)
        return Command(f"systemctl reset-failed {unit} 2>/dev/null; systemctl restart {unit}")
