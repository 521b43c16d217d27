"""Monitoring: Prometheus + Alertmanager on the monitor host, node exporters everywhere, the alert rules.

``settings``: the monitoring variables, checked, and the scrape targets read from the inventory.
``rules``: the alert rules with their budgets (how long after a fault each may take to fire).
``api``: what Prometheus and Alertmanager say (commands run on the monitor host, parsed here).
``gate``: the alert checks the failover gates run (fired within budget after DOWN, resolved after UP).
"""
