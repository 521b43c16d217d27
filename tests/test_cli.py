"""`inv` and `fab` show the same collection, and every task documents every flag."""

import re
import subprocess
import sys

from conftest import REPO

PROGRAMS = {"inv": [sys.executable, "-m", "invoke"], "fab": [sys.executable, "-m", "fabric"]}

TASKS = {"lock.status", "lock.release", "lab.up", "lab.status", "lab.down", "inventory.show", "common.setup",
         "haproxy.setup", "haproxy.status", "site.setup",
         "api.setup", "api.deploy", "api.rollback", "api.status",
         "stream.setup", "stream.deploy", "stream.rollback", "stream.status", "test.failover", "test.load",
         "keepalived.setup", "lb.status", "test.lb-failover", "test.host-failover", "test.reload", "monitor.setup", "monitor.status", "monitor.rules"}


def listed(program):
    done = subprocess.run([*PROGRAMS[program], "--list"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return set(re.findall(r"^  (\S+\.\S+)", done.stdout, re.M))


def test_inv_and_fab_list_the_same_tasks():
    assert listed("inv") == TASKS
    assert listed("fab") == TASKS


def test_every_flag_has_help():
    for task in sorted(TASKS):
        done = subprocess.run([*PROGRAMS["inv"], "--help", task], cwd=REPO, capture_output=True,
                              text=True, timeout=60)
        options = done.stdout.split("Options:", 1)[1]
        flags = re.findall(r"^\s+(?:-\w(?: [A-Z]+)?, )?(--[\w\[\]-]+)(?:=[A-Z]+)?(.*)$", options, re.M)
        assert flags, task
        for flag, rest in flags:
            assert rest.strip(), f"{task} {flag} has no help text"


def test_every_task_named_in_one_call_runs():
    """Invoke de-duplicates equal tasks in one call; api.setup and stream.setup share their code."""
    from invoke import Executor

    from fabfile import ns

    executor = Executor(ns)
    calls = executor.normalize(["haproxy.setup", "api.setup", "stream.setup"])
    assert [call.task for call in executor.dedupe(calls)] == [ns["haproxy.setup"], ns["api.setup"], ns["stream.setup"]]
