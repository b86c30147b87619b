"""The AppConfig agent on the stand-in: the same HTTP path the AppConfig Lambda extension serves on
localhost:2772, on 127.0.0.1, answering with the deployed version of each configuration profile."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from feedbackloop.local.http import LoopbackServer
from feedbackloop.uiconfig import validate

_PATH = re.compile(r"/applications/([^/]+)/environments/([^/]+)/configurations/([^/?]+)")


class LocalAppConfigAgent(LoopbackServer):
    def __init__(self, port: int = 0) -> None:
        self._deployed: dict[tuple[str, str, str], tuple[int, bytes]] = {}
        self._lock = threading.Lock()
        super().__init__("appconfig-agent", port)

    def deploy(self, application: str, environment: str, profile: str, document: dict[str, Any]) -> int:
        """Make a validated document the deployed version; return its version number."""
        validate(document)
        with self._lock:
            version = self._deployed.get((application, environment, profile), (0, b""))[0] + 1
            self._deployed[(application, environment, profile)] = (version, json.dumps(document).encode())
        return version

    def _handler_class(self):
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                match = _PATH.fullmatch(self.path.split("?")[0])
                with agent._lock:
                    found = agent._deployed.get(match.groups()) if match else None
                if found is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                version, body = found
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Configuration-Version", str(version))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
