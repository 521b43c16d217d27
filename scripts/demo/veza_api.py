"""veza-api demo: health plus a WebSocket at /api/v1/ws that greets and echoes, naming its instance."""

import json

from demo_http import DemoHandler, WebSocketClosed, instance_name, serve  # build: inlined

SERVICE = "backend-api"
DEFAULT_PORT = 8080
WEBSOCKET_PATH = "/api/v1/ws"


class ApiHandler(DemoHandler):
    def route(self, path: str) -> bool:
        if path != WEBSOCKET_PATH:
            return False
        websocket = self.accept_websocket()
        if websocket is None:
            return True
        try:
            websocket.send_text(json.dumps({"instance": instance_name(), "version": VERSION}))
            while True:
                message = websocket.receive_text()
                websocket.send_text(json.dumps({"instance": instance_name(), "echo": message}))
        except (WebSocketClosed, OSError):
            pass
        return True


def main() -> int:
    return serve(ApiHandler)
