"""A real HTTP receiver on loopback that records what it is sent and answers with scripted statuses."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.helpers import ServerThread


class Recorder(ServerThread):
    def __init__(self):
        self.received: list[dict] = []
        self.statuses: list[int] = []  # answered in order; 200 once exhausted
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    status = outer.statuses.pop(0) if outer.statuses else 200
                    if 200 <= status < 300:
                        outer.received.append({"path": self.path, "json": json.loads(body or b"null")})
                    else:
                        outer.refused += 1
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.refused = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def take(self) -> list[dict]:
        with self.lock:
            out, self.received = self.received, []
        return [r["json"] for r in out]
