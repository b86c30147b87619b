"""`feedbackloop local up` serves until Ctrl-C or SIGTERM, then stops cleanly, moto server included;
`feedbackloop local reset` empties its stores while it serves on."""

from __future__ import annotations

import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from urllib.parse import urlsplit

import boto3
import pytest

pytestmark = pytest.mark.local


def _records_on_the_stream(aws: str) -> int:
    from feedbackloop.local.environment import ingest_settings

    kinesis = boto3.Session(aws_access_key_id="local", aws_secret_access_key="local",
                            region_name="us-east-1").client("kinesis", endpoint_url=aws)
    stream = ingest_settings().stream_name
    total = 0
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        total += len(kinesis.get_records(ShardIterator=iterator, Limit=10_000)["Records"])
    return total


def _listening(url: str) -> bool:
    parts = urlsplit(url)
    with socket.socket() as sock:
        return sock.connect_ex((parts.hostname, parts.port)) == 0


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_local_up_serves_and_stops_on_ctrl_c_and_sigterm(tmp_path, stop):
    """SIGTERM (a service manager's stop, `kill`) used to end the process without stopping the stack: the
    moto server it had started was left running."""
    process = subprocess.Popen([sys.executable, "-m", "feedbackloop.cli", "local", "up", "--api-port", "0"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # read the banner on a thread, so a server that hangs silently fails the test instead of CI
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
        banner = ""
        deadline = time.monotonic() + 180  # moto took 37 s to start on a loaded two-core machine
        while "Ctrl-C" not in banner and time.monotonic() < deadline:
            try:
                banner += lines.get(timeout=1)
            except queue.Empty:
                assert process.poll() is None, f"local up exited early:\n{banner}"
        api = re.search(r"API\s+(http://127\.0\.0\.1:\d+)", banner).group(1)
        key = re.search(r"API key\s+(\S+)", banner).group(1)
        aws = re.search(r"AWS\s+(http://127\.0\.0\.1:\d+)", banner).group(1)
        assert json.loads((tmp_path / ".feedbackloop" / "endpoints.json").read_text())["api_url"] == api

        event = {"event_id": "up-1", "user_id": "u1", "item_id": "i1", "event_type": "click",
                 "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "schema_version": "1.0"}
        request = urllib.request.Request(f"{api}/events", data=json.dumps({"events": [event]}).encode(),
                                         headers={"x-api-key": key, "Content-Type": "application/json"},
                                         method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.loads(response.read())["accepted"] == 1

        if stop == signal.SIGINT:  # once: `local reset` empties the stores; the same URLs and key serve on
            assert _records_on_the_stream(aws) == 1
            reset = subprocess.run([sys.executable, "-m", "feedbackloop.cli", "local", "reset"], cwd=tmp_path,
                                   capture_output=True, text=True, timeout=300)
            assert reset.returncode == 0, reset.stdout + reset.stderr
            endpoints = json.loads((tmp_path / ".feedbackloop" / "endpoints.json").read_text())
            assert (endpoints["api_url"], endpoints["api_key"], endpoints["aws_endpoint"]) == (api, key, aws)
            assert _records_on_the_stream(aws) == 0
            with urllib.request.urlopen(request, timeout=30) as response:
                assert json.loads(response.read())["accepted"] == 1
            assert _records_on_the_stream(aws) == 1

        process.send_signal(stop)
        assert process.wait(timeout=60) == 0
        assert not _listening(api) and not _listening(aws)
    finally:
        if process.poll() is None:
            process.kill()
