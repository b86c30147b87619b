"""The embedded local default: everything `cdk deploy` creates, on one machine, in one process."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import boto3

from feedbackloop import resources
from feedbackloop.local.adjust import LocalRetraining, Schedule
from feedbackloop.local.api import LocalApi
from feedbackloop.local.appconfig import LocalAppConfig
from feedbackloop.local.environment import (
    STATE_DIR,
    LocalEndpoints,
    LocalUiConfig,
    MotoServer,
    adjust_settings,
    cleaner_settings,
    create_resources,
    create_ui_config,
    eraser_settings,
    ingest_settings,
    new_api_key,
    physical_name,
    release_endpoint,
    replay_settings,
    serving_settings,
    use_appconfig_endpoint,
    use_endpoint,
)
from feedbackloop.local.functions import (
    ADJUST_FUNCTION,
    CLEANER_FUNCTION,
    ERASER_FUNCTION,
    INGEST_FUNCTION,
    SERVING_FUNCTION,
    LocalFunction,
    LogSink,
)
from feedbackloop.local.queue import QueueMapping
from feedbackloop.local.stream import EventSourceMapping, MappingConfig, RawArchiver

if TYPE_CHECKING:
    from feedbackloop.models.training import TrainingParams

_HANDLER_CACHES = {"lambdas.ingest.handler": ("_stream",), "lambdas.cleaner.handler": ("_cleaner",),
                   "lambdas.serving.handler": ("_models", "_online", "_item_counters", "_ui_config", "_erasure_log",
                                               "_erasure_queue"),
                   "lambdas.eraser.handler": ("_settings",), "lambdas.adjust.handler": ("_adjuster",)}


@dataclass
class LocalRuntime:
    """Start with `with LocalRuntime() as runtime:`; stops cleanly on exit (and on Ctrl-C)."""

    cleaner_overrides: dict = field(default_factory=dict)
    serving_overrides: dict = field(default_factory=dict)
    state_dir: Path = STATE_DIR
    api_port: int = 0
    moto_port: int | None = None
    capture_logs: bool = True
    mapping: MappingConfig = field(default_factory=MappingConfig)
    # AppConfig stand-in seconds per real second: 60 runs the UI config's 5-minute rollout and 5-minute
    # bake in ten seconds
    appconfig_time_scale: float = 1.0
    # the adjust function's schedule (EventBridge Scheduler's rate in AWS): seconds between runs, on the
    # wall clock; None: no schedule (the demo invokes it at simulated times itself)
    adjust_interval: float | None = None
    adjust_overrides: dict = field(default_factory=dict)
    # the training budget of the retrainings the adjust function starts (None: LOCAL_TRAINING)
    training: TrainingParams | None = None
    api_key: str = ""  # "": a new key at start
    # `local up`: this process resets the stack on SIGHUP (serve_until_interrupted), so endpoints.json names it
    # for `feedbackloop local reset`; a process that does not handle SIGHUP is never named (it would end)
    resets_on_signal: bool = False
    _resetting: bool = field(default=False, init=False, repr=False)

    def start(self) -> LocalRuntime:
        _limit_malloc_arenas()
        self._environ = dict(os.environ)
        self.moto = MotoServer(self.moto_port).start()
        use_endpoint(self.moto.endpoint)
        self.session = boto3.Session()
        create_resources(self.session)
        os.environ.update(ingest_settings().to_env())
        # every function runs in this one process, where a function's own threads take turns for one GIL
        # with the others' (in AWS each has its own): the cleaner writes its objects one at a time
        os.environ.update(cleaner_settings(**{"write_threads": 1} | self.cleaner_overrides).to_env())
        os.environ.update(replay_settings().to_env())
        erasures = resources.ERASURE_REQUESTS
        erasure_queue = self.session.client("sqs").get_queue_url(
            QueueName=physical_name(erasures.key) + erasures.name_suffix)["QueueUrl"]
        # AppConfig: the stand-in in front of moto (control plane and agent); boto3 appconfig clients go to it
        self.appconfig_server = LocalAppConfig(self.moto.endpoint, time_scale=self.appconfig_time_scale).start()
        use_appconfig_endpoint(self.appconfig_server.endpoint_url)
        self.appconfig: LocalUiConfig = create_ui_config(self.session)
        os.environ.update(serving_settings(erasure_queue_url=erasure_queue,
                                           appconfig_agent_url=self.appconfig_server.agent_url,
                                           **self.serving_overrides).to_env())
        os.environ.update(eraser_settings().to_env())
        os.environ.update(adjust_settings(self.appconfig, self.session, **self.adjust_overrides).to_env())
        LocalRetraining.params = self.training
        self._stdout = sys.stdout
        if not self._resetting:  # a reset keeps the log: the handlers' loggers hold the stream they began with
            self.log_file: Path | None = None
            if self.capture_logs:
                started = time.strftime("%Y%m%dT%H%M%S")
                self.log_file = self.state_dir / "logs" / f"lambda-{started}.log"  # a log stream per run
                self.log_sink = LogSink(self.log_file, self.session)
        if self.capture_logs:
            sys.stdout = self.log_sink
        _reset_handler_caches()
        # Powertools keeps the request it resolves on a class attribute that every resolver in a process
        # shares (in AWS, one function per process): the two API functions take turns, or one reads the
        # other's request under concurrent load
        api_turns = threading.Lock()
        # what the API's functions put on the stream (ingest) or the erasure queue (serving's writes) is
        # polled at once (an idle consumer polls once a second); a read wakes nobody: waking the stream's
        # four pollers and the queue's after every GET cost five polls per recommendation
        self.ingest = LocalFunction(INGEST_FUNCTION, api_turns, after_invoke=self._wake_stream_consumers)
        self.cleaner = LocalFunction(CLEANER_FUNCTION)
        self.serving = LocalFunction(SERVING_FUNCTION, api_turns, after_invoke=self._wake_queue_consumers)
        self.mappings, self.archivers, self.queues = [], [], []
        self.eraser = LocalFunction(ERASER_FUNCTION)
        self.adjust = LocalFunction(ADJUST_FUNCTION)
        self.api_key = self.api_key or new_api_key()
        self.api = LocalApi({"ingest": self.ingest, "serving": self.serving}, self.api_key, self.api_port).start()

        stream_name = ingest_settings().stream_name
        kinesis = self.session.client("kinesis")
        stream_arn = kinesis.describe_stream_summary(StreamName=stream_name)["StreamDescriptionSummary"]["StreamARN"]
        shards = [s["ShardId"] for s in kinesis.list_shards(StreamName=stream_name)["Shards"]]
        queue_url = self.session.client("sqs").get_queue_url(
            QueueName=physical_name(resources.CLEANER_FAILURES.key))["QueueUrl"]
        self.mappings = [
            EventSourceMapping(self.session, stream_name, shard, stream_arn, self.cleaner.invoke, queue_url,
                               self.mapping)
            for shard in shards
        ]
        self.archivers = [
            RawArchiver(self.session, stream_name, shard, replay_settings().raw_bucket,
                        max_idle_interval=self.mapping.max_idle_interval) for shard in shards
        ]
        self.queues = [QueueMapping(self.session, erasure_queue, self.eraser.invoke)]
        self.schedules = [] if self.adjust_interval is None else \
            [Schedule(self.adjust.invoke, lambda: datetime.now(UTC), self.adjust_interval)]
        for consumer in (*self.mappings, *self.archivers, *self.queues, *self.schedules):
            consumer.start()
        self.endpoints = LocalEndpoints(self.moto.endpoint, self.api.url, self.api_key,
                                        self.appconfig_server.endpoint_url,
                                        os.getpid() if self.resets_on_signal else 0, time.time())
        self.endpoints.save(self.state_dir)
        return self

    def _wake_stream_consumers(self, event: dict) -> None:
        for consumer in (*self.mappings, *self.archivers):
            consumer.wake()

    def _wake_queue_consumers(self, event: dict) -> None:
        if event.get("httpMethod", "GET") not in ("GET", "HEAD"):
            for consumer in self.queues:
                consumer.wake()

    def reset(self) -> None:
        """Empty every store and cache: the stack as a fresh start, on the same ports and with the same API key,
        so clients keep their settings (`feedbackloop local reset`; SIGHUP to `local up`). The stand-in keeps
        all it is sent in memory, as moto does (the lake, the raw archive, the dedup ids, the stream's records):
        a long run grows until it is reset. Everything stored is gone afterwards, as after `local up` anew."""
        self.api_port, self.moto_port = int(self.api.url.rsplit(":", 1)[1]), self.moto.port
        self._resetting = True
        try:
            self.stop()
            gc.collect()
            _release_free_memory()
            self.start()
        finally:
            self._resetting = False

    @property
    def records_cleaned(self) -> int:
        return sum(m.records_seen for m in self.mappings)

    @property
    def records_archived(self) -> int:
        return sum(a.records_archived for a in self.archivers)

    def wait_until_processed(self, records: int, timeout: float = 600) -> bool:
        """Block until the cleaner has taken `records` records off the stream and the archiver has
        written them; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.records_cleaned >= records and sum(a.records_seen for a in self.archivers) >= records:
                for archiver in self.archivers:
                    archiver.flush_soon()
                if self.records_archived >= records:
                    return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        for schedule in self.schedules:
            schedule.stop()
        for consumer in (*self.mappings, *self.archivers, *self.queues):
            consumer.stop()
        for consumer in (*self.mappings, *self.archivers, *self.queues):
            consumer.join(timeout=30)
        for archiver in self.archivers:
            archiver.flush()
        self.api.stop()
        self.appconfig_server.stop()
        sys.stdout = self._stdout
        if self.capture_logs:
            self.log_sink.flush()
        self.moto.stop()
        release_endpoint(self._environ)
        _reset_handler_caches()  # their clients point at the endpoint that just went away

    def __enter__(self) -> LocalRuntime:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _reset_handler_caches() -> None:
    """Handlers build their clients once per container; a new local stack is a new container."""
    for module, caches in _HANDLER_CACHES.items():
        if module in sys.modules:
            for cache in caches:
                getattr(sys.modules[module], cache).cache_clear()


MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # mallopt's parameter number (glibc's malloc.h)


def _limit_malloc_arenas() -> None:
    """At most MALLOC_ARENAS glibc malloc arenas in this process (as MALLOC_ARENA_MAX=2 would; glibc: elsewhere
    a no-op). glibc gives each thread that meets a locked arena a new one, up to 8 per core, and keeps every
    arena for the process's life: the stand-in's many threads (16 API connections, the pollers, the handlers'
    pools, Arrow's and DuckDB's) spread their allocations over all of them, and what is freed in one arena
    stays there, fragmented, where malloc_trim cannot return it. Measured (`feedbackloop bench soak`-like
    one-minute runs at 16 clients, each followed by a reset): resident memory after each of three resets
    467, 511, 546 MB with glibc's default, 475, 494, 499 MB with two arenas, the glibc heap 155 against 105 MB.
    Called before the stack starts its threads (arenas already made stay)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, MALLOC_ARENAS)


def _release_free_memory() -> None:
    """Give free pages back to the system: Arrow's pool (mimalloc or jemalloc) and glibc's heap keep them
    otherwise (glibc: elsewhere a no-op)."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


RESET_SIGNAL = getattr(signal, "SIGHUP", None)  # `feedbackloop local reset` sends it to `local up`


def serve_until_interrupted(console, stop: threading.Event | None = None,
                            reset: Callable[[], None] | None = None) -> None:
    """`feedbackloop local up`: serve until Ctrl-C (SIGINT) or SIGTERM, then return so the caller stops the
    stack cleanly. A second signal while it stops interrupts the stop itself (Python's default). With `reset`,
    SIGHUP calls it (on this thread, between waits) and serving goes on."""
    stop = stop or threading.Event()
    resets = threading.Event()

    def requested(signum, frame) -> None:
        stop.set()

    signals = {signal.SIGINT: requested, signal.SIGTERM: requested}
    if reset is not None and RESET_SIGNAL is not None:
        signals[RESET_SIGNAL] = lambda signum, frame: resets.set()
    previous = {s: signal.signal(s, handler) for s, handler in signals.items()}
    try:
        while not stop.wait(0.5):  # a timed wait: the main thread runs the handlers promptly
            if resets.is_set() and reset is not None:
                resets.clear()
                console.write("resetting: every store emptied, same ports and API key...\n")
                console.flush()
                reset()
                console.write("reset done\n")
                console.flush()
        console.write("\nstopping...\n")
        console.flush()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
