"""Load-testing engine for ``inv test.load``: open-model HTTP and WebSocket load through HAProxy.

Pure asyncio. Importing this package (or any module of it) pulls in neither
Fabric/Paramiko nor aiohttp/websockets: the network libraries are imported by
the functions that open connections, so the task list and the unit tests stay fast.

    outcomes    Sample, outcome classes, exception classification, instance parsing
    schedule    the constant-arrival-rate scheduler (latency from the intended send time)
    stats       HDR histograms per scenario and per 1 s bucket, error classes, per-backend split
    http_load   aiohttp sessions and the api / hls request makers
    ws_load     the WebSocket stickiness scenario (``websockets``)
    engine      fixed-rate runs, the ramp that finds the knee, the generator self-check
    counters    HAProxy runtime API counter deltas (retries, redispatches, errors)
    thresholds  ``p99<50ms``-style thresholds: parse and evaluate
    baseline    comparison with an earlier report
    report      the JSON report (``kind: veza-load-report``) and atomic file writes
    svg         the over-time chart
    facade      synchronous helpers for the failover test (BackgroundLoad, fetch, open_session)
    keepalive   requests on persistent connections (KeepAliveLoad, http.client), MixedLoad of both
                client kinds, kind_counts: the two kinds counted apart by method and outcome
"""

REPORT_KIND = "veza-load-report"
REPORT_VERSION = 1
SCENARIOS = ("api", "hls", "ws")


class LoadTestError(Exception):
    """Bad input to the engine (a rate, a threshold, a baseline); the message is the one line shown."""
