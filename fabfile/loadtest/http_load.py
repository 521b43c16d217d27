"""HTTP requests through the balancer with aiohttp, and the ``api`` and ``hls`` scenarios.

The session has NO cookie jar: HAProxy sets ``SERVERID`` on API answers, and a
client that sent it back would pin the whole load to one backend, hiding the
round robin (and half the pool) from the test. Redirects are not followed (a
3xx is an answer). Every request opens a new connection, as a fresh client does:
aiohttp's pool would retry a request that failed on a reused connection and so
hide it; the persistent connections are keepalive.py's, counted apart.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict

from .outcomes import OK, Sample, classify_exception, cookie_from_set_cookie, describe_exception, \
    instance_from_body, outcome_of_status

MAX_BODY = 64 * 1024  # bytes read from an answer: health JSON and HLS stand-ins are tiny
DEFAULT_COOKIE = "SERVERID"


def open_session(*, max_in_flight: int, timeout: float):
    """An aiohttp ClientSession sized for ``max_in_flight`` open requests, a new connection per request
    (call inside the event loop)."""
    import aiohttp

    # The pool limit equals the scheduler's in-flight cap, so no request waits hidden in the client.
    connector = aiohttp.TCPConnector(limit=max_in_flight, force_close=True, ttl_dns_cache=300)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                 timeout=aiohttp.ClientTimeout(total=timeout), trust_env=False)


class HttpTarget:
    """Requests against one base URL (``http://host:port``) that never raise for network trouble."""

    def __init__(self, base_url: str, cookie_name: str = DEFAULT_COOKIE, clock=time.monotonic):
        self.base_url = base_url.rstrip("/")
        self.cookie_name = cookie_name
        self.clock = clock

    async def request(self, session, path: str, due: float, *, method: str = "GET", headers: dict | None = None,
                      key: str | None = None) -> Sample:
        """One request (a GET unless ``method`` says otherwise, no body); a Sample with its latency from
        ``due``, its method and the instance that answered."""
        try:
            async with session.request(method, self.base_url + path, allow_redirects=False,
                                       headers=headers) as response:
                body = (await response.content.read(MAX_BODY)).decode("utf-8", errors="replace")
                status = response.status
                cookies = response.headers.getall("Set-Cookie", [])
        except Exception as exc:  # noqa: BLE001 - every failure is a classified sample
            return Sample(due, classify_exception(exc), seconds=self.clock() - due, error=describe_exception(exc),
                          key=key, method=method)
        outcome = outcome_of_status(status)
        instance = instance_from_body(body) or cookie_from_set_cookie(cookies, self.cookie_name)
        return Sample(due, outcome, status, instance, self.clock() - due,
                      "" if outcome == OK else f"HTTP {status}", key=key, method=method)


class ApiScenario:
    """GET the health endpoint: the per-backend split comes from its JSON ``instance`` (or the cookie)."""

    name = "api"

    def __init__(self, path: str = "/api/v1/health"):
        self.path = path

    def request(self, index: int) -> tuple:
        """(path, key) of request ``index``."""
        return self.path, None

    def observe(self, sample: Sample) -> None:
        """Nothing beyond the common statistics."""

    def report(self) -> dict:
        return {"path": self.path}


class HlsScenario:
    """GET ``/hls/<track>/<segment>`` over ``tracks`` tracks in turn; checks each track stays on one streamer.

    HAProxy hashes the path two levels deep (``/hls/<track>``), so every segment of
    a track must be served by the same streamer; a track seen on two is a violation.
    """

    name = "hls"

    def __init__(self, tracks: int = 16, prefix: str = "/hls/"):
        self.tracks = tracks
        self.prefix = prefix.rstrip("/") + "/"
        self.track_instances: dict = defaultdict(Counter)

    def request(self, index: int) -> tuple:
        track = f"track-{index % self.tracks:03d}"
        return f"{self.prefix}{track}/segment-{index // self.tracks:05d}.ts", track

    def observe(self, sample: Sample) -> None:
        if sample.outcome == OK and sample.key:
            self.track_instances[sample.key][sample.instance or "?"] += 1

    def violations(self) -> dict:
        """Tracks answered by more than one streamer: track -> {streamer: requests}."""
        return {track: dict(seen) for track, seen in sorted(self.track_instances.items()) if len(seen) > 1}

    def report(self) -> dict:
        tracks_per_streamer = Counter()
        for seen in self.track_instances.values():
            tracks_per_streamer[seen.most_common(1)[0][0]] += 1
        violations = self.violations()
        return {
            "tracks": self.tracks,
            "tracks_seen": len(self.track_instances),
            "tracks_per_streamer": dict(sorted(tracks_per_streamer.items())),
            "track_consistent": not violations,
            "track_violations": violations,
        }
