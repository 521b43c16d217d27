"""The failover gate (``inv test.failover``): kill one API backend behind HAProxy, prove clients do not notice.

Modules: ``sequence`` (the steps in order, the wind-down), ``pool_watch`` (HAProxy
states), ``load_checks`` / ``websocket_checks`` (what clients see, through the load engine's
clients in ``fabfile/loadtest/facade.py``), ``metrics`` / ``metrics_checks`` (HAProxy's
Prometheus exporter), ``report`` and ``plot`` (JSON and SVG), ``stoppers`` (how the
victim dies and comes back).
"""
