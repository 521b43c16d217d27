"""The ``test`` collection: one module per task, the task named as its module (``lb_failover`` -> ``test.lb-failover``).

A new gate is one more name in ``TASK_MODULES``; what the gates share is in ``shared.py``.
"""

from __future__ import annotations

import importlib

from invoke import Collection

TASK_MODULES = ("failover", "host_failover", "lb_failover", "load", "reload")

collection = Collection("test", *(getattr(importlib.import_module(f".{name}", __name__), name) for name in TASK_MODULES))
