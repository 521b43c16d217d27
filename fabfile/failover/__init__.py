"""The failover gate (``inv test.failover``): kill one API backend behind HAProxy, prove clients do not notice.

Modules: ``sequence`` (the steps in order, the wind-down), ``pool_watch`` (HAProxy
states), ``load_checks`` / ``websocket_checks`` (what clients see), ``report`` and
``plot`` (JSON and SVG), ``stoppers`` (how the victim dies and comes back),
``load`` and ``websocket`` (the HTTP and WebSocket clients).
"""
