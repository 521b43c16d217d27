#!/usr/bin/env python3
"""A stand-in for HAProxy + 2 backend-api + 2 stream-server on one loopback port, for the load-test tests.

    python scripts/loadtest_fake_lb.py [--status 503] [--stall-after 1 --stall-for 1] [--unsticky]

Prints ``PORT <n>`` once it listens. Contract (as the lab answers through HAProxy):
GET /api/v1/health -> JSON with ``instance`` (round robin over two backends, or the one
named by ``Cookie: SERVERID=``) and ``Set-Cookie: SERVERID=<instance>``; /api/v1/ws ->
greeting ``{"instance","version"}`` then ``{"instance","echo"}`` per text message;
GET /hls/<track>/<segment> -> ``stream-server instance=<s> track=<t> version=v1`` with
the streamer chosen by a hash of the track. GET /control/arrivals -> how many requests
arrived during the stall window.
"""

import argparse
import asyncio
import json
import time
import zlib

from aiohttp import WSMsgType, web

BACKENDS = ("backend-api-1", "backend-api-2")
STREAMERS = ("stream-server-1", "stream-server-2")


def build_app(options) -> web.Application:
    state = {"next": 0, "first": None, "arrivals_in_stall": 0}

    async def gate(request_time: float) -> None:
        """Hold every request that arrives inside the stall window until the window ends."""
        if options.stall_for <= 0:
            return
        if state["first"] is None:
            state["first"] = request_time
        start = state["first"] + options.stall_after
        end = start + options.stall_for
        if start <= request_time < end:
            state["arrivals_in_stall"] += 1
            await asyncio.sleep(end - request_time)

    def pick(request) -> str:
        pinned = request.cookies.get("SERVERID")
        if pinned in BACKENDS:
            return pinned
        state["next"] += 1
        return BACKENDS[state["next"] % len(BACKENDS)]

    async def health(request):
        await gate(time.monotonic())
        instance = pick(request)
        body = {"status": "ok", "service": "backend-api", "instance": instance, "version": "v1"}
        response = web.json_response(body, status=options.status)
        response.headers["set-cookie"] = f"SERVERID={instance}; path=/"
        return response

    async def hls(request):
        await gate(time.monotonic())
        track = request.match_info["track"]
        streamer = STREAMERS[zlib.crc32(track.encode()) % len(STREAMERS)]
        return web.Response(text=f"stream-server instance={streamer} track={track} version=v1\n", status=options.status)

    async def websocket(request):
        instance = pick(request)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"instance": instance, "version": "v1"}))
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                break
            echoed_by = BACKENDS[1 - BACKENDS.index(instance)] if options.unsticky else instance
            await ws.send_str(json.dumps({"instance": echoed_by, "echo": message.data}))
        return ws

    async def play(request):
        """The unsafe route: 201 naming the backend and the request id (?id=)."""
        await gate(time.monotonic())
        return web.json_response({"instance": pick(request), "id": request.query.get("id", "")}, status=201)

    async def arrivals(request):
        return web.json_response({"arrivals_in_stall": state["arrivals_in_stall"]})

    app = web.Application()
    app.add_routes([web.get("/api/v1/health", health), web.get("/api/v1/ws", websocket),
                    web.get("/hls/{track}/{segment}", hls), web.post("/api/v1/plays", play),
                    web.get("/control/arrivals", arrivals)])
    return app


async def serve(options) -> None:
    runner = web.AppRunner(build_app(options), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", options.port, backlog=1024)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    await asyncio.sleep(options.max_seconds)  # bounded: the fixture ends it sooner
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--status", type=int, default=200)
    parser.add_argument("--stall-after", type=float, default=0.0, help="seconds after the first request")
    parser.add_argument("--stall-for", type=float, default=0.0)
    parser.add_argument("--unsticky", action="store_true", help="WS echoes come from the other backend")
    parser.add_argument("--max-seconds", type=float, default=600.0)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
