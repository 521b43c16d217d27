"""The rollout's order and decisions against a recording fake transport and a fake runtime API."""

import hashlib
import signal
import threading
import time

import pytest

from fabfile.deploy import audit, lock
from fabfile.deploy.artifact import DeployError, read_artifact
from fabfile.capacity import CapacityFloor
from fabfile.haproxy_state import ServerStat
from fabfile.deploy.rollout import Instance, Rollout, Timeouts
from fabfile.deploy.commands import ServiceCommands
from fabfile.process import Result
from fabfile.services import BACKEND_API
from fabfile.shell import Command
from fakes import Clock

SETTINGS = BACKEND_API.settings(BACKEND_API.defaults)


class Lab:
    """Shared world of the fakes: files on each instance, HAProxy's view, and an event log."""

    def __init__(self, names, broken=(), crash_looping=()):
        self.events = []
        self.broken = set(broken)  # sha256 values whose program never gets healthy
        self.crash_looping = set(crash_looping)  # sha256 values whose program exits at start, restarted by systemd
        self.hosts = {n: {"binary": "sha-v1", "prev": "none", "running": "sha-v1", "pending": None} for n in names}
        self.admin = {n: "ready" for n in names}
        self.pids = {}  # main PID per instance: a restart gives a new one
        self.pool_violations = []
        self.last_soak_probe = {}  # instance -> len(events) at its latest soak probe

    def healthy(self, name):
        return self.hosts[name]["running"] not in self.broken and self.hosts[name]["running"] != "none"

    def status(self, name):
        if self.admin[name] == "maint":
            return "MAINT"
        if not self.healthy(name):
            return "DOWN"
        return "DRAIN" if self.admin[name] == "drain" else "UP"

    def check_pool(self):
        if not any(self.status(n) == "UP" for n in self.hosts):
            self.pool_violations.append(list(self.events))


class FakeTransport:
    """Plays an instance: recognises each command by comparing it with what ServiceCommands builds."""

    def __init__(self, lab, name):
        self.lab, self.name = lab, name
        self.commands = ServiceCommands(SETTINGS)

    def run(self, command, warn=False, timeout=None):
        host, built = self.lab.hosts[self.name], self.commands
        if command == built.facts():
            self.lab.events.append(f"{self.name}:facts")
            return Result("facts", 0, f"x86_64\n{host['binary']}\n{host['prev']}\nactive\n{host['running']}\n", "")
        if command == built.identity_probe():
            if host["running"] in self.lab.crash_looping:
                return Result("identity", 0, "none\n2\n", "")
            return Result("identity", 0, f"{host['running']}\n0\n", "")
        if command == built.discard_leftovers():
            self.lab.events.append(f"{self.name}:discard-leftovers")
            return Result("discard", 0, "", "")
        if command == built.health():
            return Result("health", 0, '{"version": "x"}\n' + ("200" if self.lab.healthy(self.name) else "000"), "")
        if command == built.soak_probe():
            self.lab.last_soak_probe[self.name] = len(self.lab.events)
            pid = self.lab.pids.get(self.name, "100")
            return Result("soak", 0, f'{pid}\n{{"version": "x"}}\n' + ("200" if self.lab.healthy(self.name) else "000"), "")
        kinds = {"stage": built.stage_incoming(host["pending"] or "-"), "install": built.install_incoming(),
                 "discard-staged": built.discard_incoming(), "swap-prev": built.swap_with_prev(),
                 "restore": built.restore_prev(), "restart": built.restart()}
        kind = next((name for name, expected in kinds.items() if command == expected), None)
        assert kind is not None, f"unexpected command {command!r}"
        self.lab.events.append(f"{self.name}:{kind}")
        if kind == "stage":
            pass
        elif kind == "discard-staged":
            host["pending"] = None
        elif kind == "install":
            host["prev"], host["binary"] = host["binary"], host["pending"]
        elif kind == "swap-prev":
            host["prev"], host["binary"] = host["binary"], host["prev"]
        elif kind == "restore":
            host["binary"], host["prev"] = host["prev"], "none"
        else:
            host["running"] = host["binary"]
            self.lab.pids[self.name] = str(int(self.lab.pids.get(self.name, "100")) + 1)
            self.lab.check_pool()
        return Result(kind, 0, "", "")

    def put(self, source, remote, mode=None):
        assert remote == self.commands.incoming and mode == "0700"
        with open(source, "rb") as handle:
            self.lab.hosts[self.name]["pending"] = hashlib.sha256(handle.read()).hexdigest()
        self.lab.events.append(f"{self.name}:put")


def untouched(lab, *names):
    """Nothing but reads and this run's staging (upload, verify, then its removal) happened on ``names``."""
    harmless = (":facts", ":discard-leftovers", ":put", ":stage", ":discard-staged")
    return all(e.endswith(harmless) for e in lab.events if e.startswith(tuple(f"{n}:" for n in names))) and all(
        lab.hosts[n]["pending"] is None for n in names)


def Stat(pool, server, status, sessions=0):  # noqa: N802 - reads like the row type it builds
    return ServerStat(pool, server, status, 1, sessions, "L7OK")


class FakeRuntime:
    def __init__(self, lab):
        self.lab = lab

    def show_stat(self):
        return [Stat("api_pool", n, self.lab.status(n)) for n in self.lab.hosts]

    def server(self, pool, name):
        return Stat(pool, name, self.lab.status(name))

    def set_state(self, pool, name, state, health=None):
        self.lab.admin[name] = state
        self.lab.events.append(f"{name}:haproxy:{state}")
        if health:
            self.lab.events.append(f"{name}:haproxy:health-{health}")
        self.lab.check_pool()


class Lines:
    def __init__(self):
        self.lines = []

    def line(self, text):
        self.lines.append(text)


def make_rollout(lab, runtime=None, batch=1, min_up=1, max_fail=1):
    clock = Clock(start=0.0)
    instances = [Instance(n, FakeTransport(lab, n), SETTINGS) for n in lab.hosts]
    return Rollout(instances, runtime or FakeRuntime(lab), "api_pool", Lines(),
                   Timeouts(drain=2, health=3, haproxy_up=3, interval=0.5), clock=clock, sleep=clock.sleep,
                   batch=batch, floor=CapacityFloor("api_pool", len(instances), min_up), max_fail=max_fail)


@pytest.fixture
def binary(tmp_path):
    path = tmp_path / "veza-api"
    path.write_bytes(b"#!/usr/bin/python3\nprint('v2')\n")
    return read_artifact(str(path))


def test_one_instance_at_a_time_in_inventory_order(binary):
    lab = Lab(["b1", "b2"])
    rollout = make_rollout(lab)
    rollout.run(binary, rollout.preflight(binary, force=False))
    steps = [e for e in lab.events if not e.endswith(":facts")]
    for name in ("b1", "b2"):  # each staged (upload, verify) while in service, then out, installed, back
        assert [e.split(":", 1)[1] for e in steps if e.startswith(name + ":")] == [
            "discard-leftovers", "put", "stage", "haproxy:drain", "haproxy:maint", "install", "restart",
            "haproxy:ready", "haproxy:health-up"]
    assert steps.index("b1:haproxy:health-up") < steps.index("b2:haproxy:drain")  # one at a time
    # A pool of two never overlaps soaks: b2 goes out once b1's soak is over.
    assert lab.last_soak_probe["b1"] <= lab.events.index("b2:haproxy:drain")
    assert [o.status for o in rollout.outcomes] == ["changed", "changed"]
    assert all(lab.hosts[n]["running"] == binary.sha256 and lab.hosts[n]["prev"] == "sha-v1" for n in lab.hosts)
    assert not rollout.failed and not lab.pool_violations
    assert set(rollout.outcomes[0].phases) == {"stage", "drain", "install", "restart", "identity", "health", "soak",
                                               "haproxy"}
    assert rollout.outcomes[0].phases["haproxy"] == 0.0  # UP seen inside the soak: no wait for it after


def test_same_binary_again_restarts_nothing(binary):
    lab = Lab(["b1", "b2"])
    for host in lab.hosts.values():
        host["binary"] = host["running"] = binary.sha256
    rollout = make_rollout(lab)
    rollout.run(binary, rollout.preflight(binary, force=False))
    assert [o.status for o in rollout.outcomes] == ["ok", "ok"]
    assert all(e.endswith(":facts") for e in lab.events)


def test_broken_binary_rolls_back_first_instance_and_stops(binary):
    lab = Lab(["b1", "b2"], broken=[binary.sha256])
    rollout = make_rollout(lab)
    rollout.run(binary, rollout.preflight(binary, force=False))
    assert [o.status for o in rollout.outcomes] == ["rolled-back", "untouched"]
    assert "timed out" in rollout.outcomes[0].detail
    assert lab.hosts["b1"]["running"] == "sha-v1" and lab.status("b1") == "UP"
    assert lab.hosts["b2"] == {"binary": "sha-v1", "prev": "none", "running": "sha-v1", "pending": None}
    assert untouched(lab, "b2")
    assert "b1:restore" in lab.events
    assert rollout.failed and not lab.pool_violations


def test_a_binary_that_dies_at_start_fails_the_identity_gate_at_once(binary):
    """systemd restarting the new process is a crash loop: rolled back on the first probe that shows it,
    not after the health timeout."""
    lab = Lab(["b1", "b2"], crash_looping=[binary.sha256])
    rollout = make_rollout(lab)
    rollout.run(binary, rollout.preflight(binary, force=False))
    assert [o.status for o in rollout.outcomes] == ["rolled-back", "untouched"]
    detail = rollout.outcomes[0].detail
    assert "systemd restarted it 2 time(s)" in detail and "journalctl -u veza-backend-api" in detail, detail
    assert "timed out" not in detail and "within 0.0s" in detail  # the fake clock: no waiting at all
    assert lab.hosts["b1"]["running"] == "sha-v1" and lab.status("b1") == "UP" and untouched(lab, "b2")


def test_identity_probe_output_is_parsed():
    parse = ServiceCommands.parse_identity
    assert parse("abc\n3\n") == ("abc", 3)
    assert parse("abc\n") == ("abc", 0)  # no count (no such unit yet): not a crash loop
    assert parse("\n") == ("none", 0)


def test_refuses_when_the_pool_would_be_left_empty(binary):
    lab = Lab(["b1", "b2"])
    lab.hosts["b2"]["running"] = "none"  # b2 is DOWN: b1 is the only server UP
    rollout = make_rollout(lab)
    with pytest.raises(DeployError, match="taking b1 out would leave no server UP in api_pool"):
        rollout.preflight(binary, force=False)
    assert all(e.endswith(":facts") for e in lab.events)
    rollout.preflight(binary, force=True)  # --force overrides


def test_rollback_swaps_prev_back_with_the_same_gates(binary):
    lab = Lab(["b1", "b2"])
    for host in lab.hosts.values():
        host.update(binary="sha-v2", running="sha-v2", prev="sha-v1")
    rollout = make_rollout(lab)
    rollout.run(None, rollout.preflight(None, force=False))
    assert [o.status for o in rollout.outcomes] == ["changed", "changed"]
    assert all(h["running"] == "sha-v1" and h["prev"] == "sha-v2" for h in lab.hosts.values())
    assert lab.events.index("b1:haproxy:ready") < lab.events.index("b2:haproxy:drain")


def test_preflight_refusals(tmp_path):
    with pytest.raises(DeployError, match="no such file"):
        read_artifact(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(DeployError, match="file is empty"):
        read_artifact(str(empty))


def test_wrong_architecture_elf_is_refused(tmp_path):
    """An ELF header patched to aarch64 (e_machine 183) against x86_64 hosts."""
    header = bytearray(b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + b"\x02\x00" + b"\x00\x00" + b"\x01\x00\x00\x00")
    header[18:20] = (183).to_bytes(2, "little")
    path = tmp_path / "veza-api-arm64"
    path.write_bytes(bytes(header) + b"\x00" * 64)
    artifact = read_artifact(str(path))
    assert artifact.elf_machine == 183
    lab = Lab(["b1", "b2"])
    with pytest.raises(DeployError, match="built for ELF machine 183 .aarch64/arm64. but b1 is x86_64"):
        make_rollout(lab).preflight(artifact, force=False)
    header[18:20] = (62).to_bytes(2, "little")
    path.write_bytes(bytes(header) + b"\x00" * 64)
    make_rollout(Lab(["b1", "b2"])).preflight(read_artifact(str(path)), force=False)


def test_service_commands_are_quoted_per_run_and_root_owned():
    commands = ServiceCommands(SETTINGS, run_id="42-abc")
    assert commands.incoming == "/opt/veza/backend-api/veza-api.veza-new-42-abc"
    assert ServiceCommands(SETTINGS, run_id="43-def").incoming != commands.incoming
    stage = commands.stage_incoming("f" * 64)
    assert stage.command.startswith("actual=$(sha256sum /opt/veza/backend-api/veza-api.veza-new-42-abc ")
    assert stage.command.endswith("chown root:veza-api /opt/veza/backend-api/veza-api.veza-new-42-abc && "
                                  "chmod 0755 /opt/veza/backend-api/veza-api.veza-new-42-abc")
    assert commands.install_incoming().command.endswith(
        "mv -f /opt/veza/backend-api/veza-api.veza-new-42-abc /opt/veza/backend-api/veza-api")
    assert commands.restart() == Command("systemctl reset-failed veza-backend-api 2>/dev/null; "
                                         "systemctl restart veza-backend-api")
    assert commands.health() == Command("curl -s -m 2 -w '\\n%{http_code}' http://127.0.0.1:8080/api/v1/health")
    facts = ServiceCommands.parse_facts("x86_64\nsha-a\nnone\nactive\nsha-a\n")
    assert facts == {"machine": "x86_64", "sha256": "sha-a", "prev_sha256": "none", "unit": "active",
                     "running_sha256": "sha-a"}


# -- issue 9: lock, soak, interruption, failures after the first runtime-API change, convergence ------------



def test_lock_commands_are_one_atomic_round_trip_and_release_only_our_own():
    owner = lock.owner_record(who="ana@ws", pid=42, run="42-ab", task="api.deploy", sha256="f" * 64, message="hotfix",
                              started="2026-01-01T00:00:00Z")
    take = lock.acquire(owner).command
    assert "mkdir /var/lock/veza-ops/deploy.lock 2>/dev/null; then printf" in take
    assert '"run": "42-ab"' in take and "> /var/lock/veza-ops/deploy.lock/owner.json" in take
    assert lock.release("42-ab").command == (
        "if grep -qF '\"42-ab\"' /var/lock/veza-ops/deploy.lock/owner.json 2>/dev/null; "
        "then rm -rf /var/lock/veza-ops/deploy.lock; fi")
    assert lock.heartbeat("42-ab").command.endswith("&& touch /var/lock/veza-ops/deploy.lock/owner.json")
    held = lock.parse('held\n{"who": "ana@ws", "pid": 42, "task": "api.deploy", "sha256": "' + "f" * 64 + '"}\n75\n')
    assert held.state == "held" and held.age == 75 and held.stale(60) and not held.stale(90)
    assert held.holder().startswith("ana@ws pid 42 running api.deploy sha256 ffffffffffff")
    assert lock.parse("taken\n").state == "taken" and lock.parse("free\n").state == "free"


def test_audit_lines_are_one_json_object_appended():
    entry = audit.record("pushed", who="ana@ws", run="1-a", task="api.deploy", instance="b1", **{"from": "a", "to": "b"})
    command = audit.append(entry).command
    assert command.startswith("mkdir -p /var/log/veza-ops && { printf '%s\\n' '{")
    assert command.endswith(">> /var/log/veza-ops/audit.jsonl; }")
    assert audit.parse(command.split("'")[3] + "\nnot json\n")[0]["event"] == "pushed"
    # What queued up while the writer was busy goes in one round trip: one append (one write) per line.
    two = audit.append(entry, audit.record("ready", who="ana@ws", run="1-a", task="api.deploy")).command
    assert two.count(">> /var/log/veza-ops/audit.jsonl") == 2 and two.index('"pushed"') < two.index('"ready"')


class CrashingLab(Lab):
    """The target binary answers 200, then stops answering after ``after`` health probes."""

    def __init__(self, names, crashing, after):
        super().__init__(names)
        self.crashing, self.after, self.probes = crashing, after, {}

    def healthy(self, name):
        if self.hosts[name]["running"] == self.crashing:
            self.probes[name] = self.probes.get(name, 0) + 1
            return self.probes[name] <= self.after
        return super().healthy(name)


def test_crash_inside_the_soak_rolls_back_and_stops(binary):
    lab = CrashingLab(["b1", "b2"], crashing=binary.sha256, after=3)
    rollout = make_rollout(lab)
    rollout.timeouts.soak = 2
    rollout.run(binary, rollout.preflight(binary, force=False))
    assert [o.status for o in rollout.outcomes] == ["rolled-back", "untouched"]
    assert "crashed inside the 2s soak" in rollout.outcomes[0].detail
    assert lab.hosts["b1"]["running"] == "sha-v1" and lab.status("b1") == "UP"
    # Pulled out of rotation at once, before the restore.
    assert lab.events.index("b1:haproxy:maint", lab.events.index("b1:haproxy:ready")) < lab.events.index("b1:restore")


class FailingRuntime(FakeRuntime):
    def __init__(self, lab, fail_on):
        super().__init__(lab)
        self.fail_on = fail_on

    def set_state(self, pool, name, state, health=None):
        if (name, state) == self.fail_on:
            self.fail_on = None
            raise RuntimeError("runtime API does not answer (haproxy restarting)")
        super().set_state(pool, name, state, health)


def test_runtime_api_error_after_the_swap_is_the_rollback_path(binary):
    lab = Lab(["b1", "b2"])
    rollout = make_rollout(lab)
    rollout.context.runtime = FailingRuntime(lab, ("b1", "ready"))
    rollout.run(binary, rollout.preflight(binary, force=False))
    assert [o.status for o in rollout.outcomes] == ["rolled-back", "untouched"]
    assert "haproxy restarting" in rollout.outcomes[0].detail
    assert lab.hosts["b1"]["running"] == "sha-v1" and lab.admin["b1"] == "ready"


class PairWithOneStopping(FakeRuntime):
    """Two balancers as one (``BalancerSet``'s contract): the first stops answering once ``b1`` is in MAINT."""

    def __init__(self, lab):
        super().__init__(lab)
        self.name, self.stopped = "lb1,lb2", False

    def set_state(self, pool, name, state, health=None):
        if self.stopped:
            super().set_state(pool, name, state, health)  # lb2 carries it out, lb1 refuses
            raise RuntimeError("lb1: HAProxy runtime API does not answer (Connection refused)")
        super().set_state(pool, name, state, health)
        self.stopped = state == "maint"

    def answering(self):
        answering = FakeRuntime(self.lab)
        answering.name = "lb2"
        return answering


def test_a_balancer_that_stops_answering_mid_instance_rolls_it_back_through_the_other(binary):
    lab = Lab(["b1", "b2"])
    rollout = make_rollout(lab)
    rollout.context.runtime = PairWithOneStopping(lab)
    rollout.run(binary, rollout.preflight(binary, force=False))
    assert [o.status for o in rollout.outcomes] == ["rolled-back", "untouched"]
    assert lab.hosts["b1"]["running"] == "sha-v1" and lab.admin["b1"] == "ready" and not lab.pool_violations
    # Out of rotation on the balancer that answers before the old binary is restored, then back.
    ready = lab.events.index("b1:haproxy:ready")
    assert ready < lab.events.index("b1:haproxy:maint", ready) < lab.events.index("b1:restore")
    assert "put back through lb2 only: lb1 does not answer" in rollout.outcomes[0].detail
    assert any("FAILED" in line and "lb1: HAProxy runtime API does not answer" in line for line in rollout.output.lines)


class InterruptingTransport(FakeTransport):
    def __init__(self, lab, name, on, times=1):
        super().__init__(lab, name)
        self.on, self.times = on, times

    def run(self, command, warn=False, timeout=None):
        result = super().run(command, warn=warn, timeout=timeout)
        if self.times and self.lab.events and self.lab.events[-1] == f"{self.name}:{self.on}":
            self.times -= 1
            self.on = getattr(self, "on_second", self.on)
            raise KeyboardInterrupt()
        return result


@pytest.mark.parametrize("phase", ["install", "restart"])
def test_interrupt_finishes_the_gates_of_the_current_instance(binary, phase):
    lab = Lab(["b1", "b2"])
    rollout = make_rollout(lab)
    rollout.instances[0].transport = InterruptingTransport(lab, "b1", phase)
    with pytest.raises(KeyboardInterrupt):
        rollout.run(binary, rollout.preflight(binary, force=False))
    assert [o.status for o in rollout.outcomes] == ["interrupted", "untouched"]
    assert lab.admin["b1"] == "ready" and lab.status("b1") == "UP" and lab.hosts["b1"]["running"] == binary.sha256
    assert lab.hosts["b2"]["running"] == "sha-v1" and not rollout.abandoned
    assert any("interrupted" in line for line in rollout.state_lines())


def test_second_interrupt_stops_at_once_and_says_so(binary):
    lab = Lab(["b1", "b2"])
    rollout = make_rollout(lab)
    transport = InterruptingTransport(lab, "b1", "install", times=2)
    transport.on_second = "restart"
    rollout.instances[0].transport = transport
    with pytest.raises(KeyboardInterrupt):
        rollout.run(binary, rollout.preflight(binary, force=False))
    assert rollout.abandoned and rollout.outcomes[0].detail == "second interrupt: left as it was"


def test_rerun_converges_an_instance_left_in_maint_with_the_target_on_disk(binary):
    lab = Lab(["b1", "b2"])
    lab.hosts["b1"].update(binary=binary.sha256, prev="sha-v1", running="sha-v1")  # pushed, never restarted
    lab.admin["b1"] = "maint"
    rollout = make_rollout(lab)
    rollout.run(binary, rollout.preflight(binary, force=False))
    assert [o.status for o in rollout.outcomes] == ["changed", "changed"]
    assert "b1:put" not in lab.events and "b1:restart" in lab.events
    assert all(lab.hosts[n]["running"] == binary.sha256 and lab.status(n) == "UP" for n in lab.hosts)
    assert not lab.pool_violations


def test_deploy_overrides_are_validated_before_anything():
    from fabfile.tasks.service import timeouts_from
    from fabfile.values import InvalidValue

    assert timeouts_from({"deploy_soak_seconds": 0}).soak == 0
    for bad in ({"deploy_soak_seconds": -1}, {"deploy_health_timeout": "soon"}, {"deploy_poll_interval": 0}):
        with pytest.raises(InvalidValue):
            timeouts_from(bad)


# -- issue 15: batches, the capacity floor, max-fail ------------------------------------------------------

class FloorLab(Lab):
    """Records how many servers are UP after every state change; ``broken_on`` hosts never get healthy
    on a new binary (a bad disk, say), whatever its sha256."""

    def __init__(self, names, broken_on=()):
        super().__init__(names)
        self.broken_on = set(broken_on)
        self.up_samples = []
        self.out_at_once = 0

    def healthy(self, name):
        if name in self.broken_on and self.hosts[name]["running"] not in ("sha-v1", "none"):
            return False
        return super().healthy(name)

    def check_pool(self):
        super().check_pool()
        self.up_samples.append(sum(self.status(n) == "UP" for n in self.hosts))
        self.out_at_once = max(self.out_at_once, sum(self.admin[n] != "ready" for n in self.hosts))


def batched_rollout(lab, batch, min_up, max_fail=1, runtime=None):
    rollout = make_rollout(lab, runtime, batch, min_up, max_fail)
    rollout.timeouts.soak = 1
    return rollout


def test_batches_never_take_the_pool_below_the_floor(binary):
    names = [f"b{i}" for i in range(1, 13)]
    lab = FloorLab(names)
    rollout = batched_rollout(lab, batch=4, min_up=9)  # 4 asked, the floor allows 3 out at once
    rollout.run(binary, rollout.preflight(binary, force=False))
    assert [o.status for o in rollout.outcomes] == ["changed"] * 12
    assert all(lab.hosts[n]["running"] == binary.sha256 and lab.status(n) == "UP" for n in names)
    assert min(lab.up_samples) >= 9 and lab.out_at_once <= 3
    assert [line for line in rollout.output.lines if line.startswith("-- batch")] == [
        "-- batch of 3: b1, b2, b3", "-- batch of 3: b4, b5, b6", "-- batch of 3: b7, b8, b9",
        "-- batch of 3: b10, b11, b12"]
    # Within a batch, every instance is back in service before the next batch starts draining.
    assert lab.events.index("b3:haproxy:health-up") < lab.events.index("b4:haproxy:drain")


class InstallSeen(FakeTransport):
    """Sets ``installed`` once its instance's new binary is in place."""

    def __init__(self, lab, name):
        super().__init__(lab, name)
        self.installed = threading.Event()

    def run(self, command, warn=False, timeout=None):
        result = super().run(command, warn=warn, timeout=timeout)
        if command == self.commands.install_incoming():
            self.installed.set()
        return result


class HealthWaitsTransport(FakeTransport):
    """Health probes wait (bounded, real time) for ``event``."""

    def __init__(self, lab, name, event):
        super().__init__(lab, name)
        self.event = event

    def run(self, command, warn=False, timeout=None):
        if command == self.commands.health():
            self.event.wait(timeout=5)
        return super().run(command, warn=warn, timeout=timeout)


def test_a_batch_failure_rolls_back_the_whole_batch_and_stops(binary):
    """b2 fails its health gate once b1 runs the new binary too: both go back. (Unordered, the fake clock lets
    b2 fail before b1 was taken out, and then b1 is rightly left untouched: that was the flaky run.)"""
    lab = FloorLab(["b1", "b2", "b3", "b4"], broken_on=["b2"])
    rollout = batched_rollout(lab, batch=2, min_up=1)
    rollout.instances[0].transport = InstallSeen(lab, "b1")
    rollout.instances[1].transport = HealthWaitsTransport(lab, "b2", rollout.instances[0].transport.installed)
    rollout.run(binary, rollout.preflight(binary, force=False))
    assert [o.status for o in rollout.outcomes] == ["rolled-back", "rolled-back", "untouched", "untouched"]
    assert all(lab.hosts[n]["running"] == "sha-v1" and lab.status(n) == "UP" for n in lab.hosts)
    assert untouched(lab, "b3", "b4")
    assert rollout.failed and min(lab.up_samples) >= 1
    assert any(line.startswith("-- stopping: 1 failed instance(s) (max-fail 1); 2 left untouched")
               for line in rollout.output.lines)


def test_max_fail_goes_on_below_the_limit_and_stops_at_it(binary):
    """pyinfra's --fail-percent 0 did not stop a rollout; ours stops at exactly max_fail failures."""
    lab = FloorLab(["b1", "b2", "b3", "b4", "b5"], broken_on=["b1", "b3"])
    rollout = batched_rollout(lab, batch=1, min_up=1, max_fail=2)
    rollout.run(binary, rollout.preflight(binary, force=False))
    assert [o.status for o in rollout.outcomes] == ["rolled-back", "changed", "rolled-back", "untouched", "untouched"]
    assert lab.hosts["b2"]["running"] == binary.sha256
    assert lab.hosts["b4"]["running"] == lab.hosts["b5"]["running"] == "sha-v1"
    assert untouched(lab, "b4", "b5")


def test_the_floor_counts_only_servers_that_are_up(binary):
    """b1 is DOWN already: taking it out costs nothing, so it joins the batch beside one UP server."""
    lab = FloorLab(["b1", "b2", "b3"])
    lab.hosts["b1"]["running"] = "none"
    rollout = batched_rollout(lab, batch=3, min_up=1)
    rollout.run(binary, rollout.preflight(binary, force=False))
    batches = [line for line in rollout.output.lines if line.startswith("-- batch")]
    assert batches == ["-- batch of 2: b1, b2", "-- batch of 1: b3"] and min(lab.up_samples) >= 1


def test_preflight_refuses_when_the_floor_leaves_nothing_to_take_out(binary):
    lab = FloorLab(["b1", "b2", "b3"])
    rollout = batched_rollout(lab, batch=1, min_up=3)
    with pytest.raises(DeployError, match="taking b1 out would leave fewer than 3 servers UP in api_pool"):
        rollout.preflight(binary, force=False)
    assert all(e.endswith(":facts") for e in lab.events)


class SigintTransport(FakeTransport):
    """On its install, Ctrl-C as the terminal sends it (SIGINT, which Python handles in the main thread)
    when ``send_now()`` says so; the install is held until the main thread took it (``interrupt_taken()``)."""

    def __init__(self, lab, name, interrupt_taken, send_now=lambda: True):
        super().__init__(lab, name)
        self.interrupt_taken, self.send_now = interrupt_taken, send_now

    def run(self, command, warn=False, timeout=None):
        result = super().run(command, warn=warn, timeout=timeout)
        if command == self.commands.install_incoming():
            if self.send_now():
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            for _ in range(500):  # the command is still running when the main thread takes the interrupt
                if self.interrupt_taken():
                    break
                time.sleep(0.01)
        return result


def test_ctrl_c_in_a_batch_makes_every_instance_of_the_batch_safe(binary):
    lab = FloorLab(["b1", "b2", "b3", "b4"])
    rollout = batched_rollout(lab, batch=2, min_up=1)
    both_installing = threading.Barrier(2)  # once every instance of the batch is busy installing, one sends
    for instance in rollout.instances[:2]:
        instance.transport = SigintTransport(lab, instance.name, lambda: rollout.control.interrupt is not None,
                                             send_now=lambda: both_installing.wait(timeout=5) == 0)
    with pytest.raises(KeyboardInterrupt):
        rollout.run(binary, rollout.preflight(binary, force=False))
    statuses = {o.name: o.status for o in rollout.outcomes}
    assert statuses == {"b1": "interrupted", "b2": "interrupted", "b3": "untouched", "b4": "untouched"}
    assert all(lab.admin[n] == "ready" and lab.status(n) == "UP" for n in lab.hosts)
    assert lab.hosts["b3"]["running"] == lab.hosts["b4"]["running"] == "sha-v1" and not rollout.abandoned


def test_batching_input_is_checked_before_anything():
    from fabfile.deploy.rollout import Batching, batching
    from fabfile.values import InvalidValue

    def floor(spec, size=12):
        return CapacityFloor.parse("api_pool", spec, size)

    assert batching("25%", floor(1), 1, targets=12).batch == 3
    assert batching("50%", floor("75%"), 2, targets=12) == Batching(3, floor(9), 2)
    assert batching(5, floor(1, 2), 1, targets=2).batch == 1  # the floor caps the batch
    for bad, message in [((0, 1), "--batch: 0 must be from 1"), (("150%", 1), "--batch: 150% must be"),
                         ((1, 0), "--max-fail: 0 must be from 1"), (("two", 1), "--batch: 'two' is not a count")]:
        with pytest.raises(InvalidValue, match=message):
            batching(bad[0], floor(1), bad[1], targets=12)
    for spec, message in [("100%", "deploy_min_up: 100% keeps all 12 servers"), (12, "lower it to at most 11")]:
        with pytest.raises(InvalidValue, match=message):
            floor(spec)
    with pytest.raises(InvalidValue, match="lower it to at most 0"):  # a pool of one with floor 1: no deploy
        batching(1, floor(1, 1), 1, targets=1)


class RestartedBySystemdTransport(FakeTransport):
    """The new binary crashes once inside the soak and systemd restarts it at once: health still 200."""

    def run(self, command, warn=False, timeout=None):
        result = super().run(command, warn=warn, timeout=timeout)
        if command == self.commands.soak_probe() and self.lab.hosts[self.name]["running"] != "sha-v1":
            self.lab.pids[self.name] = str(int(self.lab.pids.get(self.name, "100")) + 1)
        return result


def test_a_crash_restarted_by_systemd_inside_the_soak_is_a_failure(binary):
    lab = Lab(["b1", "b2"])
    rollout = make_rollout(lab)
    rollout.instances[0].transport = RestartedBySystemdTransport(lab, "b1")
    rollout.run(binary, rollout.preflight(binary, force=False))
    assert [o.status for o in rollout.outcomes] == ["rolled-back", "untouched"]
    assert "main process changed (pid 101 -> 102)" in rollout.outcomes[0].detail
    assert lab.hosts["b1"]["running"] == "sha-v1" and lab.status("b1") == "UP"


class FailingUploadTransport(FakeTransport):
    def put(self, source, remote, mode=None):
        raise OSError("no space left on device")


def test_a_failed_upload_stops_before_taking_the_instance_out(binary):
    lab = Lab(["b1", "b2"])
    rollout = make_rollout(lab)
    rollout.instances[0].transport = FailingUploadTransport(lab, "b1")
    rollout.run(binary, rollout.preflight(binary, force=False))
    assert [o.status for o in rollout.outcomes] == ["failed", "untouched"]
    assert "upload failed: no space left on device" in rollout.outcomes[0].detail
    assert not [e for e in lab.events if ":haproxy:" in e] and untouched(lab, "b2")
    assert all(lab.hosts[n]["binary"] == lab.hosts[n]["running"] == "sha-v1" for n in lab.hosts)


# -- pipelined soak: the next batch starts while the previous one soaks, within the floor -------------------




def pick_batch(queue, up_now, batch, min_up, at_risk=()):
    return CapacityFloor("api_pool", 12, min_up).pick(queue, up_now, batch, at_risk)


def test_overlap_needs_the_floor_to_hold_with_the_soaking_batch_counted_as_down():
    two = ["b1", "b2"]
    assert pick_batch(["b2"], set(two), batch=1, min_up=1, at_risk=["b1"]) == []  # pool of 2: never
    assert pick_batch(["b2"], set(two), batch=1, min_up=1) == ["b2"]  # once b1's soak is over
    twelve = {f"b{i}" for i in range(1, 13)}
    soaking, queue = ["b1", "b2", "b3"], [f"b{i}" for i in range(4, 13)]
    # 12 at 25 % (3), floor 50 % (6): 12 - 3 soaking - 3 out = 6 >= 6, the next batch goes at once.
    assert pick_batch(queue, twelve, batch=3, min_up=6, at_risk=soaking) == ["b4", "b5", "b6"]
    # Floor 75 % (9): 12 - 3 soaking - 3 out = 6 < 9, no overlap (and no smaller batch either).
    assert pick_batch(queue, twelve, batch=3, min_up=9, at_risk=soaking) == []
    assert pick_batch(queue, twelve, batch=3, min_up=7, at_risk=soaking) == []  # room for 2 of 3: wait
    assert pick_batch(queue, twelve, batch=3, min_up=9) == ["b4", "b5", "b6"]
    # A server already not UP costs nothing, soaking or not.
    assert pick_batch(["b4"], twelve - {"b4"}, batch=1, min_up=8, at_risk=soaking) == ["b4"]


def overlapped_batches(rollout):
    return [line for line in rollout.output.lines if line.startswith("-- batch") and "soak" in line]


class SoakWaitsTransport(FakeTransport):
    """Soak probes wait (bounded, real time) for ``event``: a soak lasts until the next batch got somewhere."""

    def __init__(self, lab, name, event):
        super().__init__(lab, name)
        self.event = event

    def run(self, command, warn=False, timeout=None):
        if command == self.commands.soak_probe():
            self.event.wait(timeout=5)
        return super().run(command, warn=warn, timeout=timeout)


class DrainSeen(FakeRuntime):
    def __init__(self, lab, name):
        super().__init__(lab)
        self.drain_of, self.drained = name, threading.Event()

    def set_state(self, pool, name, state, health=None):
        super().set_state(pool, name, state, health)
        if (name, state) == (self.drain_of, "drain"):
            self.drained.set()


def test_twelve_at_a_quarter_with_floor_half_overlap_one_batch_with_the_soak(binary):
    names = [f"b{i}" for i in range(1, 13)]
    lab = FloorLab(names)
    rollout = batched_rollout(lab, batch=3, min_up=6)
    rollout.context.runtime = DrainSeen(lab, "b4")  # b3 soaks until b4 is drained (5 s at most): no race with a fake clock
    rollout.instances[2].transport = SoakWaitsTransport(lab, "b3", rollout.runtime.drained)
    rollout.run(binary, rollout.preflight(binary, force=False))
    assert [o.status for o in rollout.outcomes] == ["changed"] * 12
    assert all(lab.hosts[n]["running"] == binary.sha256 and lab.status(n) == "UP" for n in names)
    assert overlapped_batches(rollout) == ["-- batch of 3: b4, b5, b6 (while b1, b2, b3 soak)",
                                           "-- batch of 3: b7, b8, b9 (while b4, b5, b6 soak)",
                                           "-- batch of 3: b10, b11, b12 (while b7, b8, b9 soak)"]
    assert lab.events.index("b4:haproxy:drain") < lab.last_soak_probe["b3"]  # it did start inside the soak
    assert min(lab.up_samples) >= 6 and lab.out_at_once <= 3  # the soaking batch is back in rotation


def test_floor_three_quarters_keeps_the_soaks_one_after_the_other(binary):
    names = [f"b{i}" for i in range(1, 13)]
    lab = FloorLab(names)
    rollout = batched_rollout(lab, batch=3, min_up=9)
    rollout.run(binary, rollout.preflight(binary, force=False))
    assert [o.status for o in rollout.outcomes] == ["changed"] * 12
    assert not overlapped_batches(rollout)
    assert lab.last_soak_probe["b3"] <= lab.events.index("b4:haproxy:drain")


class SoakCrashLab(FloorLab):
    """``victim`` on the new binary stops answering once ``reached`` is set (the next batch got to a point)."""

    def __init__(self, names, victim):
        super().__init__(names)
        self.victim = victim
        self.reached = threading.Event()

    def healthy(self, name):
        if name == self.victim and self.reached.is_set() and self.hosts[name]["running"] != "sha-v1":
            return False
        return super().healthy(name)


class SoakUntilReachedTransport(FakeTransport):
    """The victim's soak probes wait (bounded, real time) for the next batch to reach its point."""

    def run(self, command, warn=False, timeout=None):
        if command == self.commands.soak_probe():
            self.lab.reached.wait(timeout=5)
        return super().run(command, warn=warn, timeout=timeout)


class HoldAtTransport(FakeTransport):
    """The next batch's first instance: once its ``at`` event happened, sets ``reached`` and waits (bounded)
    until the rollout stops."""

    def __init__(self, lab, name, at, stopped):
        super().__init__(lab, name)
        self.at, self.stopped = at, stopped

    def run(self, command, warn=False, timeout=None):
        result = super().run(command, warn=warn, timeout=timeout)
        if not self.lab.reached.is_set() and self.lab.events[-1] == f"{self.name}:{self.at}":
            self.lab.reached.set()
            for _ in range(500):
                if self.stopped():
                    break
                time.sleep(0.01)
        return result


class HoldAtRuntime(FakeRuntime):
    def __init__(self, lab, name, state, stopped):
        super().__init__(lab)
        self.name_state, self.stopped = (name, state), stopped

    def set_state(self, pool, name, state, health=None):
        super().set_state(pool, name, state, health)
        if (name, state) == self.name_state and not self.lab.reached.is_set():
            self.lab.reached.set()
            for _ in range(500):
                if self.stopped():
                    break
                time.sleep(0.01)


@pytest.mark.parametrize("point", ["maint", "restart"])
def test_a_crash_in_the_soak_rolls_back_the_batch_in_flight_and_stops(binary, point):
    """b1+b2 soak while b3+b4 are out; b1 stops answering when b3 is in MAINT (old binary still on disk) or
    has restarted on the new one: b1 and b2 go back to their previous binary, b3 back to ready on the old
    binary (maint) or to .prev (restart), b4 whichever applies, b5..b8 untouched; the floor holds."""
    names = [f"b{i}" for i in range(1, 9)]
    lab = SoakCrashLab(names, victim="b1")
    rollout = batched_rollout(lab, batch=2, min_up=4)
    stopped = lambda: rollout.control.stopping  # noqa: E731
    rollout.instances[0].transport = SoakUntilReachedTransport(lab, "b1")
    if point == "maint":
        rollout.context.runtime = HoldAtRuntime(lab, "b3", "maint", stopped)
    else:
        rollout.instances[2].transport = HoldAtTransport(lab, "b3", "restart", stopped)
    rollout.run(binary, rollout.preflight(binary, force=False))
    statuses = {o.name: o.status for o in rollout.outcomes}
    assert overlapped_batches(rollout) == ["-- batch of 2: b3, b4 (while b1, b2 soak)"]
    assert statuses["b1"] == "rolled-back" and "crashed inside the 1s soak (health 000)" in rollout.outcomes[0].detail
    assert statuses["b2"] == "rolled-back"
    if point == "maint":
        assert statuses["b3"] == "failed" and "b3:install" not in lab.events
        assert rollout.outcomes[2].detail.startswith("stopped: b1 failed (1 failed instance(s), max-fail 1)")
    else:
        assert statuses["b3"] == "rolled-back" and "b3:restore" in lab.events
    assert statuses["b4"] in ("rolled-back", "failed", "untouched")  # where the stop found it
    assert [statuses[n] for n in names[4:]] == ["untouched"] * 4 and untouched(lab, *names[4:])
    assert all(lab.hosts[n]["running"] == "sha-v1" and lab.status(n) == "UP" for n in names)
    assert rollout.failed and min(lab.up_samples) >= 4
    left = sum(status == "untouched" for status in statuses.values())  # b4 may be one of them
    assert f"-- stopping: 1 failed instance(s) (max-fail 1); {left} left untouched" in rollout.output.lines


class FlakyProbeTransport(FakeTransport):
    """The ``nth`` soak probe answers ``code`` instead of the real status, once."""

    def __init__(self, lab, name, nth, code):
        super().__init__(lab, name)
        self.nth, self.code, self.probes = nth, code, 0

    def run(self, command, warn=False, timeout=None):
        result = super().run(command, warn=warn, timeout=timeout)
        if command == self.commands.soak_probe() and self.lab.hosts[self.name]["running"] != "sha-v1":
            self.probes += 1
            if self.probes == self.nth:
                return Result("soak", 0, result.stdout.rsplit("\n", 1)[0] + "\n" + self.code, "")
        return result


def test_one_unanswered_soak_probe_is_asked_again_an_error_answer_fails_at_once(binary):
    lab = Lab(["b1", "b2"])
    rollout = make_rollout(lab)
    rollout.instances[0].transport = FlakyProbeTransport(lab, "b1", nth=3, code="000")
    rollout.run(binary, rollout.preflight(binary, force=False))
    assert [o.status for o in rollout.outcomes] == ["changed", "changed"]  # no answer once: asked again, 200
    lab = Lab(["b1", "b2"])
    rollout = make_rollout(lab)
    rollout.instances[0].transport = FlakyProbeTransport(lab, "b1", nth=3, code="503")
    rollout.run(binary, rollout.preflight(binary, force=False))
    assert [o.status for o in rollout.outcomes] == ["rolled-back", "untouched"]
    assert "crashed inside the 5s soak (health 503)" in rollout.outcomes[0].detail


class Until:
    """``wait(timeout)`` until ``predicate()`` holds (polled, bounded), as ``threading.Event.wait``."""

    def __init__(self, predicate):
        self.predicate = predicate

    def wait(self, timeout):
        for _ in range(int(timeout / 0.01)):
            if self.predicate():
                return True
            time.sleep(0.01)
        return False


def test_ctrl_c_while_one_batch_soaks_and_the_next_is_out_makes_both_safe(binary):
    names = [f"b{i}" for i in range(1, 9)]
    lab = FloorLab(names)
    rollout = batched_rollout(lab, batch=2, min_up=4)
    rollout.timeouts.soak = 1000  # fake seconds: the other workers' naps advance the shared fake clock too
    taken = lambda: rollout.control.interrupt is not None  # noqa: E731
    rollout.instances[0].transport = SoakWaitsTransport(lab, "b1", Until(taken))  # b1 soaks past the Ctrl-C
    rollout.instances[2].transport = SigintTransport(lab, "b3", taken)
    with pytest.raises(KeyboardInterrupt):
        rollout.run(binary, rollout.preflight(binary, force=False))
    statuses = {o.name: o.status for o in rollout.outcomes}
    assert overlapped_batches(rollout) == ["-- batch of 2: b3, b4 (while b1, b2 soak)"]
    assert statuses["b1"] == statuses["b3"] == "interrupted"  # soaking / just installed: each finished its gates
    assert lab.hosts["b1"]["running"] == lab.hosts["b3"]["running"] == binary.sha256
    assert [statuses[n] for n in names[4:]] == ["untouched"] * 4 and untouched(lab, *names[4:])
    assert all(lab.admin[n] == "ready" and lab.status(n) == "UP" for n in names)
    assert not rollout.abandoned and min(lab.up_samples) >= 4
