"""The keep-alive load (fabfile/loadtest/keepalive.py) against local servers on 127.0.0.1: a server
that closes idle kept-alive connections fails the next request on each (as HAProxy's soft-stop did),
one that announces the close loses nothing, the browser-like client retries GETs but never POSTs, and
the counts keep the two client kinds apart."""

import pytest
from loadtest_fixtures import fake_lb, keepalive_server

from fabfile.loadtest import LoadTestError
from fabfile.loadtest.facade import phase_counts
from fabfile.loadtest.keepalive import KeepAliveLoad, MixedLoad, kind_counts
from fabfile.loadtest.outcomes import Sample

RATE, CONNECTIONS, SECONDS = 20.0, 2, 1.0  # 10 requests per connection, 100 ms apart


def _run(load, bound=15.0):
    load.start()
    assert load.wait(bound), "the load did not end by itself"
    return sorted(load.samples, key=lambda s: s.t)


def test_an_idle_close_fails_the_next_request_on_that_connection():
    with keepalive_server(answers_per_connection=3, announce_close=False) as (url, stats):
        load = KeepAliveLoad(url, "/api/v1/health", rate=RATE, connections=CONNECTIONS, timeout=2.0,
                             max_seconds=SECONDS)
        samples = _run(load)
    failed = [s for s in samples if s.failed]
    assert len(samples) == 20 and all(s.connection == "keepalive" for s in samples)
    # Each connection: 3 answers, then the request sent on the closed socket fails, then a fresh one.
    assert 2 * 2 <= len(failed) <= 2 * 3 and {s.outcome for s in failed} == {"reset"}
    assert not any(s.retried for s in samples)
    assert load.connections_opened == stats["accepted"] == CONNECTIONS + len(failed)
    ok = [s for s in samples if not s.failed]
    assert all(s.status == 200 and s.instance == "fake-1" for s in ok)


def test_the_browser_like_client_retries_an_idle_close_once_on_a_fresh_connection():
    with keepalive_server(answers_per_connection=3, announce_close=False) as (url, _):
        load = KeepAliveLoad(url, "/api/v1/health", rate=RATE, connections=CONNECTIONS, timeout=2.0,
                             max_seconds=SECONDS, retry_idempotent=True)
        samples = _run(load)
    assert len(samples) == 20 and not [s for s in samples if s.failed]
    assert 4 <= sum(s.retried for s in samples) <= 6
    assert kind_counts(samples)["keepalive"]["retried"] == sum(s.retried for s in samples)


def test_a_close_announced_on_the_answer_loses_nothing_without_retries():
    """``Connection: close`` on the last answer: the client opens a new connection before its next request."""
    with keepalive_server(answers_per_connection=3, announce_close=True) as (url, stats):
        load = KeepAliveLoad(url, "/api/v1/health", rate=RATE, connections=CONNECTIONS, timeout=2.0,
                             max_seconds=SECONDS)
        samples = _run(load)
    assert len(samples) == 20 and not [s for s in samples if s.failed]
    assert load.connections_opened == stats["accepted"] >= 2 * 3  # 10 answers per connection, 3 per socket


def test_a_post_is_never_retried():
    with keepalive_server(answers_per_connection=2, announce_close=False) as (url, stats):
        load = KeepAliveLoad(url, "/api/v1/health", rate=RATE, connections=1, timeout=2.0, max_seconds=SECONDS,
                             unsafe_every=3, unsafe_path="/api/v1/plays", retry_idempotent=True)
        samples = _run(load)
    posts = [s for s in samples if s.method == "POST"]
    assert [s.key for s in posts] == ["keepalive-2", "keepalive-5", "keepalive-8", "keepalive-11",
                                      "keepalive-14", "keepalive-17"]
    assert not any(s.retried for s in posts)
    # Every third request is the one after two answers on a socket: with 1 connection, 2 answers per
    # socket and a POST every third request, the POSTs land on a closed socket and fail; GETs are retried.
    assert posts and all(s.outcome == "reset" for s in posts)
    assert not [s for s in samples if s.failed and s.method == "GET"]
    assert stats["POST requests"] == 0


def test_mixed_load_counts_each_kind_apart_by_method_and_outcome():
    with fake_lb() as url:
        load = MixedLoad(url, "/api/v1/health", rate=40.0, keepalive_share=0.5, connections=4, timeout=2.0,
                         max_seconds=1.0, unsafe_every=4, unsafe_path="/api/v1/plays", id_prefix="mix")
        samples = _run(load, 20.0)
    counts = kind_counts(samples)
    assert counts["new"]["total"] == 20 and counts["keepalive"]["total"] == 20
    assert counts["new"]["by_method"] == {"GET": {"ok": 15}, "POST": {"ok": 5}}
    assert counts["keepalive"]["by_method"] == {"GET": {"ok": 15}, "POST": {"ok": 5}}
    assert load.connections_opened == 4  # the fake LB keeps connections open: never reopened
    keys = {s.key for s in samples if s.method == "POST"}
    assert len(keys) == 10 and all(key.startswith(("mix-", "mix-ka-")) for key in keys)
    assert load.describe() == {"rate": 40.0, "keepalive_share": 0.5, "keepalive_connections": 4,
                               "retry_idempotent": False, "timeout": 2.0}
    phases = phase_counts(samples, [("all", samples[0].t)])
    assert phases["all"]["by_kind"] == counts


def test_a_share_of_zero_or_one_runs_one_kind_only():
    assert [type(part).__name__ for part in MixedLoad("http://127.0.0.1:9", "/", rate=10, keepalive_share=0).parts] \
        == ["BackgroundLoad"]
    assert [type(part).__name__ for part in MixedLoad("http://127.0.0.1:9", "/", rate=10, keepalive_share=1).parts] \
        == ["KeepAliveLoad"]


def test_phase_counts_show_both_kinds_even_when_one_sent_nothing():
    phases = phase_counts([Sample(0.0, "ok", 200)], [("all", 0.0)])
    assert phases["all"]["by_kind"]["keepalive"] == {"total": 0, "failed": 0, "retried": 0, "by_method": {}}
    assert phases["all"]["by_kind"]["new"]["by_method"] == {"GET": {"ok": 1}}


@pytest.mark.parametrize("kwargs, message", [
    ({"connections": 0}, "keep-alive connections: need 1 to 64, got 0"),
    ({"connections": 65}, "keep-alive connections: need 1 to 64, got 65"),
    ({"rate": 0}, "load rate must be > 0 requests/s, got 0"),
    ({"keepalive_share": 1.5}, "keep-alive share must be between 0 and 1 (0.5 = half), got 1.5"),
    ({"timeout": 0}, "request timeout must be > 0 and <= 60 s, got 0"),
])
def test_bad_settings_are_one_line(kwargs, message):
    with pytest.raises(LoadTestError) as caught:
        MixedLoad("http://127.0.0.1:9", "/", **({"rate": 10} | kwargs))
    assert str(caught.value) == message


def test_only_plain_http_targets():
    with pytest.raises(LoadTestError, match="expected http://HOST:PORT"):
        KeepAliveLoad("https://127.0.0.1:9", "/")


def test_plots_draw_each_client_kind_apart():
    """A dot per new-connection request, a square per kept-alive one, in both failover plots."""
    import xml.etree.ElementTree as ET

    from fabfile.failover.lb_plot import render_svg as lb_svg
    from fabfile.failover.plot import render_svg as failover_svg

    kinds = ["new", "keepalive", "keepalive", "new", "keepalive"]
    samples = [{"t": 0.1 * i, "kind": kind, "method": "GET", "outcome": "ok", "ok": True, "status": 200,
                "instance": "backend-api-1", "seconds": 0.01, "error": "", "lag": 0.0} for i, kind in enumerate(kinds)]
    by_kind = kind_counts([Sample(0.0, "ok", 200, connection=kind) for kind in kinds])
    requests = {"enabled": True, "total": 5, "failed": 0, "samples": samples, "by_kind": by_kind}
    svg = "{http://www.w3.org/2000/svg}"
    for render, panels, size in ((failover_svg, 2, "5.0"), (lb_svg, 1, "4.0")):
        root = ET.fromstring(render({"passed": True, "steps": [], "requests": requests}))
        squares = [r for r in root.iter(f"{svg}rect") if r.get("width") == size and r.get("height") == size]
        assert len(squares) == 3 * panels
        texts = " ".join(t.text or "" for t in root.iter(f"{svg}text"))
        assert "new 0/2 failed, keepalive 0/3 failed" in texts
