"""An HTTP server of the stand-in: bound to 127.0.0.1 only, served from a daemon thread."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

from feedbackloop.local.environment import LOOPBACK


class _Server(ThreadingHTTPServer):
    # connections beyond those being served wait in the kernel's queue instead of being reset
    # (socketserver's default of 5 reset about one request in 16 at 32 concurrent clients)
    request_queue_size = 1024


class LoopbackServer(ABC):
    """Subclasses give `_handler_class()`; `start()` serves, `stop()` shuts down, `url` says where."""

    def __init__(self, name: str, port: int = 0) -> None:
        handler = self._handler_class()
        # an answer's headers and body are two writes: with Nagle's algorithm the body would wait for the
        # client's delayed ACK of the headers (40 ms on Linux) on every request of a kept-alive connection
        handler.disable_nagle_algorithm = True
        self._server = _Server((LOOPBACK, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)

    @abstractmethod
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        """The request handler; called once, before serving, with the subclass's state already set."""

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
