"""stream-server demo: health plus GET /hls/<track_id>/<anything> answering which instance served it."""

from demo_http import DemoHandler, instance_name, serve  # build: inlined

SERVICE = "stream-server"
DEFAULT_PORT = 8082


class StreamHandler(DemoHandler):
    def route(self, path: str) -> bool:
        parts = path.split("/", 3)  # "", "hls", track, rest
        if len(parts) != 4 or parts[1] != "hls" or not parts[2] or not parts[3]:
            return False
        body = f"stream-server instance={instance_name()} track={parts[2]} version={VERSION}\n"
        self.send_body(200, "text/plain; charset=utf-8", body.encode("utf-8"))
        return True


def main() -> int:
    return serve(StreamHandler)
