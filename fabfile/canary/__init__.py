"""Canary deploys judged by HAProxy's own counters (``api.deploy --canary``, ``stream.deploy --canary``).

``plan``: the flags as data, the weights that give a step its share, whether a pool honours runtime weights.
``analysis``: HAProxy's counters of one interval, canary against stable, the verdict and the decision (pure).
``run``: the orchestration (the canary's deploy, then promote or abort and roll back), on
``weights`` (every balancer's weights, the audit and published state) and ``watch`` (the intervals).
``plot``: the report's canary as an SVG.
"""
