"""Who holds the VIP, sampled on both balancers every 100 ms, and what the samples say.

``VipSampler`` is one long-running remote shell loop per node (an exec per sample costs ~70 ms), read
line by line; each line carries its own epoch time, moved onto this machine's monotonic clock (the
test's clock). ``ownership_checks`` judges the samples of both nodes together.
"""

from __future__ import annotations

import threading
import time
from subprocess import DEVNULL, PIPE

from ..process import TimeoutExpired, start_argv


class VipSampler:
    """One node's VIP ownership: a bounded remote loop printing its addresses every 100 ms."""

    def __init__(self, node: str, argv: list, vip: str, clock=time.monotonic):
        self.node, self.argv, self.vip, self.clock = node, argv, vip, clock
        # Containers share this machine's kernel clock: a line's own epoch time, moved onto the
        # monotonic clock, is when the sample was taken (not when the pipe delivered it).
        self.offset = time.time() - time.monotonic()
        self.samples: list = []  # (clock time, holds)
        self.process = None
        self._thread = None

    def start(self) -> VipSampler:
        self.process = start_argv(self.argv, stdout=PIPE, stderr=DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, name=f"vip-sampler-{self.node}", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        for line in self.process.stdout:
            parts = line.split()
            if parts and parts[0].replace(".", "", 1).isdigit():
                self.samples.append((float(parts[0]) - self.offset, any(p.split("/")[0] == self.vip for p in parts[1:])))
        # The stream ended: the node is gone (a killed container holds nothing) or the loop ran out.
        self.samples.append((self.clock(), False))

    def stop(self) -> None:
        """End the loop this object started (by its PID) and wait for the reader."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class VipWatch:
    """The VIP samplers of a drill's balancers: one per node from the start, and another when a node's
    ended (a stopped container ends its loop; a frozen or cut one only pauses it).

    ``start_sampler(node, seconds)``: a started ``VipSampler`` whose loop ends after ``seconds``;
    ``nodes``: the balancers watched; ``seconds``: the bound of every loop (the drill's longest run)."""

    def __init__(self, start_sampler, nodes, seconds: float):
        self.start_sampler, self.seconds = start_sampler, seconds
        self.samplers = {node: [start_sampler(node, seconds)] for node in nodes}

    def holds(self, node: str) -> bool:
        """``node`` holds the VIP by the latest sample of one of its loops."""
        return any(x.samples and x.samples[-1][1] for x in self.samplers.get(node, []))

    def all_sampled(self) -> bool:
        """Every node's current loop has taken a sample."""
        return all(loops[-1].samples for loops in self.samplers.values())

    def holders(self) -> list:
        return [node for node in self.samplers if self.holds(node)]

    def samples(self, node: str, until: float = float("inf")) -> list:
        """``node``'s (clock time, holds) samples over all its loops, up to ``until``."""
        return [p for x in self.samplers[node] for p in x.samples if p[0] <= until]

    def per_node(self, until: float = float("inf")) -> dict:
        return {node: self.samples(node, until) for node in self.samplers}

    def resample_ended(self, nodes) -> None:
        """A new loop on each of ``nodes`` whose loops all ended (its container was stopped and is back)."""
        for node in nodes:
            if node in self.samplers and not any(x.alive() for x in self.samplers[node]):
                self.samplers[node].append(self.start_sampler(node, self.seconds))

    def stop(self) -> None:
        for loops in self.samplers.values():
            for sampler in loops:
                sampler.stop()


def state_at(points: list, t: float):
    """A node's VIP state at ``t``: known when its samples just before and just after ``t`` agree (or one
    sits at ``t``); None while it changes between two samples (up to one interval, 100 ms) or outside them."""
    before = next((p for p in reversed(points) if p[0] <= t), None)
    after = next((p for p in points if p[0] >= t), None)
    if before is None or after is None or before[1] != after[1]:
        return None
    return before[1]


def ownership_checks(per_node: dict, moved_at: float | None, returned_at: float | None) -> dict:
    """At every sample of either node, with the other node's state where it is known: samples with two
    holders (anywhere), with none (after the move), and holder changes after the return.

    Two nodes are sampled at different instants; a handover that falls between two samples of the other
    node is "in transition" (counted apart), never guessed into a false two-holder or no-holder sample.
    """
    two, none_after, transitions, changes, last_holder = 0, 0, 0, [], None
    events = sorted((t, node, holds) for node, points in per_node.items() for t, holds in points)
    for t, node, holds in events:
        states = {other: state_at(points, t) for other, points in per_node.items() if other != node}
        if any(state is None for state in states.values()):
            transitions += 1
            continue
        held = [node] * bool(holds) + [other for other, state in states.items() if state]
        if len(held) > 1:
            two += 1
        if moved_at is not None and t >= moved_at and not held:
            none_after += 1
        if len(held) == 1:
            if last_holder is not None and held[0] != last_holder and returned_at is not None and t > returned_at:
                changes.append({"t": t, "to": held[0]})
            last_holder = held[0]
    return {"two_holder_samples": two, "no_holder_samples_after_move": none_after,
            "in_transition_samples": transitions, "moves_after_return": changes}
