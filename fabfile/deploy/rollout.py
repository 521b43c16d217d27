"""Rolling binary deploy and rollback for a binary_service, in batches (default: one instance).

Orchestration only: what runs where and in which order. The per-instance
sequence is: drain in HAProxy (bounded wait for sessions to end), maint, push to
a temporary name, verify its sha256 on the host, keep the current binary as
``<name>.prev``, atomic rename, restart, health gate on the instance itself,
ready in HAProxy, wait for UP. A failure after the swap puts ``.prev`` back
through the same gates. Once ``max_fail`` instances failed the rollout stops, the
stopping batch goes back to its previous binary and later instances stay untouched.

A batch runs the sequence for its instances at once (one thread each, whole output
lines). Before each batch, HAProxy's view decides how many may go out: at least
``min_up`` servers of the pool stay UP (the capacity floor; unless --force).
The runtime is used only through ``show_stat``, ``server``, ``set_state`` and
``set_health``, so a composite over several balancers fits.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from ..polling import WaitTimeout, wait_until
from ..values import InvalidValue, count_or_percent, integer
from ..transports import CommandFailed, TransportError
from .artifact import ELF_MACHINES, Artifact, DeployError
from .commands import ServiceCommands


@dataclass
class Timeouts:
    drain: float = 30.0
    health: float = 30.0
    haproxy_up: float = 60.0
    interval: float = 0.2
    soak: float = 5.0  # health must stay 200 this long after ready (0 disables)
    # One round trip per soak probe: a batch soaks many instances at once on a small machine.
    soak_interval: float = 0.5
    settle: float = 10.0  # preflight waits this long for transitional pool states (UP 1/3...) to settle


@dataclass
class InstanceOutcome:
    name: str
    status: str  # ok | changed | rolled-back | failed | untouched | interrupted
    seconds: float = 0.0
    phases: dict = field(default_factory=dict)
    detail: str = ""
    state: str = ""  # where the instance was left: "ready (UP)", "MAINT", ...
    target: str = ""  # sha256 this run put (or meant to put) live
    old: str = ""  # sha256 it replaced ("none" on a first deploy)


@dataclass
class Batching:
    """How a rollout goes through a pool: ``batch`` out at once at most, ``min_up`` UP at least,
    stop after ``max_fail`` failed instances. Built from user input by ``batching``."""

    batch: int = 1
    min_up: int = 1
    max_fail: int = 1


def batching(batch, min_up, max_fail, targets: int, pool_size: int) -> Batching:
    """Check ``--batch`` (N or P% of the targets), ``deploy_min_up`` (N or P% of the pool) and
    ``--max-fail`` before anything is touched; a floor no batch can satisfy is refused too
    (``InvalidValue``: one error line, exit 2)."""
    # A count above the targets is the whole lot (``--limit`` often leaves fewer than the batch).
    size = count_or_percent("--batch", batch, max(targets, 1), high=None)
    floor = count_or_percent("deploy_min_up", min_up, pool_size, low=0)
    if pool_size - floor < 1:
        raise InvalidValue(f"deploy_min_up: {min_up} keeps all {pool_size} servers of the pool UP, so no batch can "
                           f"go out; lower it to at most {pool_size - 1}")
    fails = integer("--max-fail", max_fail, 1)
    return Batching(batch=min(size, pool_size - floor), min_up=floor, max_fail=fails)


class Instance:
    """One deploy target: carries out its ``ServiceCommands`` through its transport."""

    def __init__(self, name, transport, settings):
        self.name = name
        self.transport = transport
        self.settings = settings
        self.commands = ServiceCommands(settings)

    def facts(self) -> dict:
        return self.commands.parse_facts(self.transport.run(self.commands.facts()).stdout)

    def health(self) -> tuple:
        """(HTTP status, body) of the health path, asked on the instance itself."""
        return self.commands.parse_health(self.transport.run(self.commands.health(), warn=True).stdout)

    def soak_probe(self) -> tuple:
        """(main PID, HTTP status of the health path) in one round trip."""
        return self.commands.parse_soak_probe(self.transport.run(self.commands.soak_probe(), warn=True).stdout)

    def running_sha256(self) -> str:
        return (self.transport.run(self.commands.running_sha256(), warn=True).stdout.strip() or "none")

    def push(self, artifact: Artifact) -> None:
        """Upload to this run's temporary name (born 0700 root-only), verify, keep .prev, rename."""
        self.transport.run(self.commands.discard_leftovers())
        self.transport.put(artifact.path, self.commands.incoming, mode="0700")
        self.transport.run(self.commands.install_incoming(artifact.sha256))

    def swap_with_prev(self) -> None:
        self.transport.run(self.commands.swap_with_prev())

    def restore_prev(self) -> None:
        self.transport.run(self.commands.restore_prev())

    def restart(self) -> None:
        self.transport.run(self.commands.restart())


class Rollout:
    """Drives instances through the gates, talking to HAProxy's runtime API.

    ``audit(event, instance=None, **fields)`` is called for every event (drained, maint,
    pushed, restarted, ready, rolled-back...); ``finish_hint`` is the command that
    finishes the job when a second interrupt stops the run at once.
    """

    def __init__(self, instances, runtime, pool: str, output, timeouts: Timeouts | None = None,
                 clock=time.monotonic, sleep=time.sleep, audit=None, finish_hint: str = "",
                 batch: int = 1, min_up: int = 1, max_fail: int = 1):
        self.instances = instances
        self.runtime = runtime
        self.pool = pool
        self.output = output
        self.timeouts = timeouts or Timeouts()
        self.clock = clock
        self.sleep = sleep
        self.audit = audit or (lambda event, instance=None, **fields: None)
        self.finish_hint = finish_hint
        self.outcomes = []
        self.pool_states = {}
        self.batch = batch  # instances taken out together at most
        self.min_up = min_up  # servers of the pool that must stay UP in HAProxy (the capacity floor)
        self.max_fail = max_fail  # the rollout stops once this many instances have failed

    # -- helpers ---------------------------------------------------------
    def _say(self, name, phase, seconds, detail=""):
        self.output.line(f"{name:<16} {phase:<11} {seconds:6.2f}s  {detail}".rstrip())

    def _nap(self, seconds):
        self._checkpoint()
        self.sleep(seconds)

    def _wait(self, probe, done, timeout, what):
        return wait_until(probe, timeout=timeout, interval=self.timeouts.interval, done=done, what=what,
                          clock=self.clock, sleep=self._nap)

    def _timed(self, outcome, phase, action, detail=""):
        self._checkpoint()
        started = self.clock()
        value = action()
        seconds = self.clock() - started
        outcome.phases[phase] = round(seconds, 3)
        self._say(outcome.name, phase, seconds, detail(value) if callable(detail) else detail)
        return value

    def _event(self, event, instance, **fields):
        try:
            self.audit(event, instance, **fields)
        except Exception as exc:  # the audit trail never breaks a rollout; say so once per event
            self.output.line(f"warning: audit line '{event}' not written: {exc}")

    def would_break_floor(self, name, stats) -> bool:
        """True when ``name`` is UP and taking it out leaves fewer than ``min_up`` servers of the pool UP.

        A server that is not UP costs nothing: a pool with nothing UP (a first deploy, say) has no
        availability left to protect.
        """
        pool = [s for s in stats if s.pool == self.pool]
        up = sum(s.is_up for s in pool)
        return any(s.server == name and s.is_up for s in pool) and up - 1 < self.min_up

    @staticmethod
    def transitional(status: str) -> bool:
        """"UP 1/3", "DOWN 1/2", slowstart ("UP 50%")...: a state HAProxy is still moving out of."""
        return status.startswith(("UP ", "DOWN ", "NOLB ")) or status == "NOLB"

    # -- preflight -------------------------------------------------------
    def _settled_stats(self):
        """``show stat`` once no server of the pool is in a transitional state (bounded by ``settle``)."""
        def probe():
            return [s for s in self.runtime.show_stat()]

        def settled(stats):
            return not any(self.transitional(s.status) for s in stats if s.pool == self.pool)

        try:
            return self._wait(probe, settled, self.timeouts.settle, f"{self.pool} states to settle").value
        except WaitTimeout:
            return probe()  # still moving: decide on the latest states (the per-instance check repeats it)

    def needs_work(self, instance_name, facts, artifact) -> bool:
        """Whether this instance is not yet on the target, running it, and in service."""
        f = facts[instance_name]
        if artifact is None:
            return f["prev_sha256"] != "none"
        state = self.pool_states.get(instance_name, "")
        return not (f["sha256"] == artifact.sha256 and f["running_sha256"] == artifact.sha256
                    and f["unit"] == "active" and state in ("UP", "no check"))

    def preflight(self, artifact: Artifact | None, force: bool) -> dict:
        """Read every target's facts and the pool; refuse before touching anything."""
        facts = {}
        for instance in self.instances:
            try:
                facts[instance.name] = instance.facts()
            except (CommandFailed, TransportError) as exc:
                raise DeployError(f"{instance.name}: not reachable: {exc}") from None
            machine = facts[instance.name]["machine"]
            if artifact and artifact.elf_machine is not None:
                expected = ELF_MACHINES.get(artifact.elf_machine, ())
                if machine not in expected:
                    raise DeployError(
                        f"--binary {artifact.path}: built for ELF machine {artifact.elf_machine} "
                        f"({'/'.join(expected) or 'unknown'}) but {instance.name} is {machine}; build for {machine}"
                    )
        try:
            stats = self._settled_stats()
        except Exception as exc:  # the runtime API's own errors name the socket
            raise DeployError(f"HAProxy runtime API does not answer: {exc}") from None
        self.pool_states = {s.server: s.status for s in stats if s.pool == self.pool}
        for instance in self.instances:
            if instance.name not in self.pool_states:
                raise DeployError(f"{instance.name} is not a server of HAProxy's {self.pool}; run inv haproxy.setup")
        first = next((i for i in self.instances if self.needs_work(i.name, facts, artifact)), None)
        if first is not None and not force and self.would_break_floor(first.name, stats):
            floor = "no server" if self.min_up <= 1 else f"fewer than {self.min_up} servers"
            raise DeployError(
                f"taking {first.name} out would leave {floor} UP in {self.pool}; "
                "bring another instance up first, lower deploy_min_up, or pass --force"
            )
        return facts

    # -- per instance ----------------------------------------------------
    def _take_out(self, instance, outcome, force):
        """Drain then maint; the batch it belongs to was chosen within the floor (``_next_batch``)."""
        self._checkpoint()
        outcome.state = "DRAIN"
        self.runtime.set_state(self.pool, instance.name, "drain")
        self._event("drained", instance.name)

        def sessions():
            return self.runtime.server(self.pool, instance.name).current_sessions

        started = self.clock()
        try:
            waited = self._wait(sessions, lambda n: not n, self.timeouts.drain, f"{instance.name} sessions to drain")
            note = f"sessions 0 after {waited.elapsed:.2f}s"
        except WaitTimeout as exc:
            note = f"drain timeout, going on: {exc}"
        self.runtime.set_state(self.pool, instance.name, "maint")
        outcome.state = "MAINT"
        outcome.phases["drain"] = round(self.clock() - started, 3)
        self._event("maint", instance.name, seconds=outcome.phases["drain"])
        self._say(instance.name, "drain", outcome.phases["drain"], note + "; maint")

    def _health_detail(self, waited):
        try:
            version = json.loads(waited.value[1]).get("version", "?")
        except (ValueError, AttributeError):
            version = "?"
        return f"{waited.value[0]} version={version}"

    def _bring_back(self, instance, outcome, expected: str | None, restart: bool = True):
        """Restart, prove the main process runs ``expected`` (identity), health 200, ready, then the soak:
        health must stay 200 (and the process the same binary) for ``soak`` seconds while HAProxy
        takes it back. A failure raises; the caller rolls back."""
        if restart:
            self._timed(outcome, "restart", instance.restart)
            self._event("restarted", instance.name, to=expected)
        if expected and expected != "none":
            self._timed(outcome, "identity", lambda: self._wait(
                instance.running_sha256, lambda sha: sha == expected, self.timeouts.health,
                f"{instance.name}'s main process to run sha256 {expected[:12]}"),
                lambda w: f"/proc/MainPID/exe sha256 {w.value[:12]}")
        self._timed(outcome, "health", lambda: self._wait(
            instance.health, lambda v: v[0] == "200", self.timeouts.health,
            f"{instance.name} {instance.settings.health_path} to answer 200"), self._health_detail)
        self.runtime.set_state(self.pool, instance.name, "ready")
        # Our gates just proved it healthy: no need to wait for `rise` checks (its checks keep running).
        self.runtime.set_health(self.pool, instance.name, "up")
        outcome.state = "ready"
        self._event("ready", instance.name, sha256=expected)
        if self.timeouts.soak > 0:
            started = self.clock()

            first_pid = []

            def soak_probe():
                # The identity gate proved the main process runs the target; a crash that systemd
                # restarts shows as another main PID.
                pid, code = instance.soak_probe()
                first_pid[:] = first_pid or [pid]
                if code != "200":
                    return f"health {code or 'no answer'}"
                if pid != first_pid[0]:
                    return f"main process changed (pid {first_pid[0]} -> {pid})"
                return None

            failure = soak_probe()
            while not failure and self.clock() - started < self.timeouts.soak:
                # The last nap ends at the soak's end, then one last probe: the soak lasts what it says.
                remaining = self.timeouts.soak - (self.clock() - started)
                self._nap(min(max(self.timeouts.interval, self.timeouts.soak_interval), remaining))
                failure = soak_probe()
            outcome.phases["soak"] = round(self.clock() - started, 3)
            if failure:
                self._say(instance.name, "soak", outcome.phases["soak"], f"FAILED: {failure}")
                self._pull(instance, outcome)
                raise DeployError(f"{instance.name}: crashed inside the {self.timeouts.soak:g}s soak ({failure})")
            self._say(instance.name, "soak", outcome.phases["soak"], "health stayed 200")
        self._timed(outcome, "haproxy", lambda: self._wait(
            lambda: self.runtime.server(self.pool, instance.name), lambda s: s.is_up, self.timeouts.haproxy_up,
            f"HAProxy to report {self.pool}/{instance.name} UP"), lambda w: w.value.status)
        outcome.state = "ready (UP)"

    def _pull(self, instance, outcome):
        """Out of rotation at once (a crash in the soak): maint, no drain wait."""
        self.runtime.set_state(self.pool, instance.name, "maint")
        outcome.state = "MAINT"

    def _recover(self, instance, outcome, error, restore, expected):
        """After a failure on an instance: put the previous binary back through the same gates."""
        self._say(instance.name, "FAILED", 0, str(error))
        outcome.detail = str(error)
        try:
            restore()
            self._bring_back(instance, outcome, expected)
            outcome.status = "rolled-back"
            self._event("rolled-back", instance.name, to=expected, outcome="rolled-back", detail=str(error))
            self._say(instance.name, "rolled-back", 0, "previous binary is live and UP again")
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # report whatever broke the recovery, with the instance's name
            outcome.status = "failed"
            outcome.detail += f"; recovery failed too: {exc}"
            self._event("failed", instance.name, outcome="failed", detail=outcome.detail)
            self._say(instance.name, "FAILED", 0, f"recovery failed: {exc}; left {outcome.state or 'as is'}")

    def _give_back(self, instance, outcome, error, taken_out):
        """A failure before the binary was touched: put the server back in service, restart nothing."""
        outcome.status = "failed"
        outcome.detail = str(error)
        self._say(instance.name, "FAILED", 0, str(error))
        if taken_out:
            try:
                self.runtime.set_state(self.pool, instance.name, "ready")
                outcome.state = "ready"
            except Exception as exc:
                outcome.detail += f"; could not return it to ready: {exc}"
                self._say(instance.name, "FAILED", 0, f"still {outcome.state}: {exc}")
        self._event("failed", instance.name, outcome="failed", detail=outcome.detail)

    def _make_safe(self, instance, outcome, target, old):
        """After an interrupt: finish the gates if the target is on disk, else put the old binary back
        and return the instance to ready. Bounded by the same timeouts."""
        facts = instance.facts()
        if target and facts["sha256"] == target:
            try:
                self._bring_back(instance, outcome, target, restart=facts["running_sha256"] != target)
                outcome.detail = "interrupted; finished its gates on the new binary"
                return
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:
                self._say(instance.name, "FAILED", 0, f"finishing after the interrupt: {exc}")
                if old and old != "none" and facts["prev_sha256"] == old:
                    instance.restore_prev()
                facts = instance.facts()
        restart = facts["running_sha256"] != facts["sha256"] or facts["unit"] != "active"
        self._bring_back(instance, outcome, facts["sha256"], restart=restart)
        outcome.detail = "interrupted; back on its previous binary"

    def run(self, artifact: Artifact | None, facts: dict, force: bool = False) -> list:
        """Deploy ``artifact`` (or, when None, swap back to .prev) batch by batch, in inventory order.

        A batch is at most ``batch`` instances, fewer when HAProxy's view says taking more out would
        leave fewer than ``min_up`` servers UP. Its instances go through the per-instance sequence
        at once (one thread each). After a batch, the rollout stops once ``max_fail`` instances have
        failed; the stopping batch's instances that did succeed go back to their previous binary
        too, so the pool is left on at most the two versions it had when that batch started.
        """
        self._order = {instance.name: index for index, instance in enumerate(self.instances)}
        try:
            queue = []
            for instance in self.instances:
                if self.needs_work(instance.name, facts, artifact):
                    queue.append(instance)
                    continue
                self.outcomes.append(InstanceOutcome(instance.name, "ok", state="ready (UP)"))
                if artifact is not None:
                    self._say(instance.name, "ok", 0, f"already runs sha256 {artifact.sha256[:12]}; nothing restarted")
                else:
                    self._say(instance.name, "ok", 0, "no previous binary to roll back to")
            failures = 0
            while queue:
                batch = self._next_batch(queue, force)
                if not batch:
                    outcome = InstanceOutcome(queue[0].name, "failed", state="as before")
                    self._give_back(queue[0], outcome, DeployError(
                        f"{queue[0].name}: taking it out would leave fewer than {self.min_up} server(s) UP in "
                        f"{self.pool}; stopping before taking it out"), taken_out=False)
                    self.outcomes.append(outcome)
                    break
                del queue[:len(batch)]
                if len(batch) > 1 or self.batch > 1:
                    self.output.line(f"-- batch of {len(batch)}: {', '.join(i.name for i in batch)}")
                outcomes = self._run_batch(batch, artifact, facts, force)
                failures += sum(o.status in ("rolled-back", "failed") for o in outcomes)
                if failures >= self.max_fail:
                    self._undo_batch(batch, outcomes, force)
                    self.output.line(f"-- stopping: {failures} failed instance(s) (max-fail {self.max_fail}); "
                                     f"{len(queue)} left untouched")
                    break
        finally:
            self._untouched_rest()
        return self.outcomes

    def _next_batch(self, queue, force):
        """The next instances of ``queue`` (in order) that may go out together without breaking the floor.

        Counted from HAProxy's settled view: a server that is not UP does not count against the floor.
        A pool with fewer than ``min_up`` UP servers (a first deploy) only lets non-UP servers out."""
        if force:
            return queue[:self.batch]
        stats = [s for s in self._settled_stats() if s.pool == self.pool]
        up_now = {s.server for s in stats if s.is_up}
        spare = len(up_now) - self.min_up
        chosen = []
        for instance in queue[:self.batch]:
            if instance.name in up_now:
                if spare <= 0:
                    break
                spare -= 1
            chosen.append(instance)
        return chosen

    def _run_batch(self, batch, artifact, facts, force) -> list:
        """The per-instance sequence for every instance of ``batch`` at once; their outcomes.

        A batch of one runs in this thread (as before batches existed). For more, one thread each;
        an interrupt (which only this thread receives) is passed to them through ``_interrupt`` and
        each makes its own instance safe, bounded by the same timeouts; a second one stops them."""
        if len(batch) == 1:
            return [self._one(batch[0], artifact, facts, force)]
        from concurrent.futures import ThreadPoolExecutor, wait as wait_all

        pool = ThreadPoolExecutor(max_workers=len(batch), thread_name_prefix="rollout")
        futures, waiting = [], list(batch)
        interrupt = None
        try:
            while True:
                try:
                    while waiting:
                        futures.append(pool.submit(self._one, waiting.pop(0), artifact, facts, force))
                    wait_all(futures)
                    break
                except KeyboardInterrupt as exc:  # first: the workers make their instances safe; second: stop
                    waiting.clear()  # not started: untouched
                    interrupt = interrupt or exc
                    if self._interrupt is None:
                        self._interrupt = exc
                    else:
                        self._abandon = True
        finally:
            pool.shutdown(wait=True)
        results = []
        for future in futures:
            try:
                results.append(future.result())
            except KeyboardInterrupt as exc:
                interrupt = interrupt or exc
        if interrupt is not None or self._interrupt is not None:
            raise interrupt or self._interrupt
        return results

    _interrupt = None  # the KeyboardInterrupt the main thread received while a batch ran
    _abandon = False  # a second one: stop at once

    def _checkpoint(self):
        """In a batch's worker thread: raise the interrupt the main thread received (once), and again
        on a second one while the worker makes its instance safe."""
        import threading

        if threading.current_thread() is threading.main_thread():
            return
        state = self._worker_state()
        if self._abandon and not state.get("abandoned"):
            state["abandoned"] = True
            raise KeyboardInterrupt(str(self._interrupt or "SIGINT"))
        if self._interrupt is not None and not state.get("interrupted"):
            state["interrupted"] = True
            raise KeyboardInterrupt(str(self._interrupt or "SIGINT"))

    def _worker_state(self) -> dict:
        import threading

        local = self.__dict__.setdefault("_local", threading.local())
        if not hasattr(local, "state"):
            local.state = {}
        return local.state

    def _one(self, instance, artifact, facts, force) -> InstanceOutcome:
        """The per-instance sequence: take out, push or swap, bring back; every failure rolls back."""
        self._worker_state().clear()
        started = self.clock()
        outcome = InstanceOutcome(instance.name, "changed")
        self.outcomes.append(outcome)
        current = facts[instance.name]
        target = artifact.sha256 if artifact is not None else current["prev_sha256"]
        old = current["sha256"]
        on_disk = artifact is not None and current["sha256"] == artifact.sha256  # an earlier run got this far
        if on_disk:
            old = current["prev_sha256"]
        outcome.target, outcome.old = target, old
        taken_out = swapped = False
        try:
            try:
                self._take_out(instance, outcome, force)
                taken_out = True
                if on_disk:
                    self._say(instance.name, "converge", 0, "target binary already on disk; restart and gates")
                elif artifact is not None:
                    self._timed(outcome, "push", lambda: instance.push(artifact),
                                f"{artifact.size / 1e6:.1f} MB, sha256 {artifact.sha256[:12]} verified")
                    self._event("pushed", instance.name, **{"from": old, "to": target})
                else:
                    self._timed(outcome, "swap", instance.swap_with_prev, "previous binary is live")
                    self._event("swapped", instance.name, **{"from": old, "to": target})
                swapped = True
                self._bring_back(instance, outcome, target)
                self._event("done", instance.name, **{"from": old, "to": target}, outcome="changed",
                            seconds=round(self.clock() - started, 3))
            except KeyboardInterrupt as interrupt:
                self._interrupted(instance, outcome, target, old, interrupt)
                raise
            except Exception as exc:  # every failure is the rollback path
                if swapped:
                    if artifact is None:
                        restore = instance.swap_with_prev
                    elif old == "none":
                        restore = lambda: None  # first deploy: there is nothing to go back to
                    else:
                        restore = instance.restore_prev
                    self._recover(instance, outcome, exc, restore, None if old == "none" else old)
                else:
                    self._give_back(instance, outcome, exc, taken_out)
        finally:
            outcome.seconds = round(self.clock() - started, 3)
        return outcome

    def _undo_batch(self, batch, outcomes, force):
        """The rollout stops in this batch: its instances that did change go back to their previous
        binary through the same gates (a deploy's batch-mates of a failed instance), one at a time."""
        for instance, outcome in zip(batch, outcomes):
            if outcome.status != "changed" or outcome.old in ("none", ""):
                continue
            self._say(instance.name, "undo", 0, "its batch failed: back to its previous binary")
            self.outcomes.remove(outcome)
            facts = {instance.name: instance.facts()}
            undo = self._one(instance, None, facts, force)
            if undo.status == "changed":
                undo.status, undo.detail = "rolled-back", "its batch failed; previous binary live again"
                self._event("rolled-back", instance.name, to=outcome.old, outcome="rolled-back",
                            detail=undo.detail)

    def _untouched_rest(self):
        """Every instance without an outcome is untouched; outcomes in inventory order."""
        seen = {o.name for o in self.outcomes}
        for instance in self.instances:
            if instance.name not in seen:
                self.outcomes.append(InstanceOutcome(instance.name, "untouched", state="as before"))
        order = getattr(self, "_order", {})
        self.outcomes.sort(key=lambda o: order.get(o.name, len(order)))

    def _interrupted(self, instance, outcome, target, old, interrupt):
        """Make the current instance safe (bounded); a second interrupt stops at once."""
        outcome.status = "interrupted"
        self._say(instance.name, "INTERRUPTED", 0, f"{interrupt or 'SIGINT'}: making it safe (interrupt again to stop at once)")
        try:
            self._make_safe(instance, outcome, target, old)
            self._event("interrupted", instance.name, outcome="made safe", detail=outcome.detail)
        except KeyboardInterrupt:
            self.abandoned = True
            outcome.detail = "second interrupt: left as it was"
            self._event("interrupted", instance.name, outcome="abandoned")
        except Exception as exc:
            outcome.detail = f"interrupted; making it safe failed: {exc}"
            self._say(instance.name, "FAILED", 0, outcome.detail)

    abandoned = False

    def state_lines(self) -> list:
        """One line per instance: its outcome and where it was left (HAProxy's view when it answers)."""
        try:
            live = {s.server: s.status for s in self.runtime.show_stat() if s.pool == self.pool}
        except Exception:
            live = {}
        lines = []
        for o in self.outcomes:
            where = live.get(o.name) or o.state or "?"
            lines.append(f"{o.name:<16} {o.status:<12} haproxy={where}  {o.detail}".rstrip())
        return lines

    @property
    def failed(self) -> bool:
        return any(o.status in ("rolled-back", "failed", "interrupted") for o in self.outcomes)

    def report(self, artifact: Artifact | None) -> dict:
        return {
            "pool": self.pool,
            "artifact": asdict(artifact) if artifact else None,
            "failed": self.failed,
            "abandoned": self.abandoned,
            "instances": [asdict(o) for o in self.outcomes],
        }
