"""Canary deploys judged by HAProxy's own counters (``api.deploy --canary``, ``stream.deploy --canary``).

``plan``: the flags as data, the weights that give a step its share, whether a pool honours runtime weights.
``analysis``: HAProxy's counters of one interval, canary against stable, the verdict and the decision (pure).
``run``: the orchestration (weights on every balancer, the canary's deploy, intervals, abort or promote).
``plot``: the report's canary as an SVG.
"""
