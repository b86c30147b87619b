"""moto server in a process of its own: `python -m feedbackloop.local.moto_process PORT`.

Out of process, moto's request handling runs on another core than the handlers it serves (it is
pure Python and CPU-bound: about half a millisecond per DynamoDB item), and a crash of either side
is visible to the other as what it would be in AWS: a failed call.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from moto.server import ThreadedMotoServer
from werkzeug.serving import WSGIRequestHandler

from feedbackloop.local import moto_kinesis
from feedbackloop.local.environment import LOOPBACK


def main(argv: list[str] | None = None) -> int:
    (port,) = argv if argv is not None else sys.argv[1:]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per AWS call
    moto_kinesis.install()
    # an answer goes out as two writes (headers, then body): with Nagle's algorithm the body waits for the
    # client's delayed ACK of the headers, 40 ms on Linux, for every call
    WSGIRequestHandler.disable_nagle_algorithm = True
    server = ThreadedMotoServer(ip_address=LOOPBACK, port=int(port), verbose=False)
    server.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
