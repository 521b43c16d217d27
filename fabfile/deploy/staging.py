"""The artifact uploaded and verified on each instance ahead of its turn."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, wait as wait_all

INTERRUPT_POLL = 0.2  # seconds between wake-ups of a waiting main thread: an interrupt is taken at once


class Staging:
    """Uploads ``workers`` at a time in rollout order (a batch's size: the next batch is staged while the
    current one goes through its gates). Nothing is taken out of rotation for it; ``close`` removes
    what did not go live."""

    def __init__(self, instances, artifact, workers: int):
        self.instances = list(instances)
        self.installed = set()  # names whose staged binary went live
        self.pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(self.instances) or 1)),
                                       thread_name_prefix="stage")
        self.futures = {i.name: self.pool.submit(self._stage, i, artifact) for i in self.instances}

    @staticmethod
    def _stage(instance, artifact) -> float:
        started = time.monotonic()
        instance.stage(artifact)
        return time.monotonic() - started

    def wait(self, instance) -> float:
        """Seconds its upload and check took, once done; raises what they raised."""
        future = self.futures[instance.name]
        while not future.done():  # timed, as the batch wait: an interrupt is taken at once
            wait_all([future], timeout=INTERRUPT_POLL)
        return future.result()

    def close(self) -> None:
        """Uploads not started are cancelled; staged files of instances the rollout did not reach go."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        for instance in self.instances:
            future = self.futures[instance.name]
            if instance.name not in self.installed and not future.cancelled():
                try:
                    instance.discard_staged()
                except Exception:  # noqa: BLE001 - the next run's discard_leftovers removes it
                    pass
