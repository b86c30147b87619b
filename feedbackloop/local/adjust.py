"""The adjust function's swapped adapters on the stand-in, where moto does not behave: DuckDB for Athena
(the same Trino SQL, transpiled) and the in-process retraining runner for Step Functions; and the
schedule, a thread that invokes the function the way EventBridge Scheduler does."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import boto3

from feedbackloop.adjust.engine import RetrainingRunningError
from feedbackloop.local.lake_reader import LakeLocation
from feedbackloop.local.sql_engine import DuckDBEngine

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_SECONDS = 300.0  # as the schedule in AWS (rate(5 minutes))


class DuckDBQueries:
    """Trino SQL over the local lake. One engine per query: the lake's files change between runs."""

    def __init__(self, endpoint: str) -> None:
        self._location = LakeLocation.local_s3(endpoint)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        engine = DuckDBEngine(self._location)
        try:
            return engine.rows(sql)
        finally:
            engine.close()


class LocalRetraining:
    """Runs the retraining steps (build tables, train, evaluate, gate, publish) in a thread, one at a time,
    as the state machine would; `wait` blocks until the current run ends."""

    _lock = threading.Lock()
    _thread: threading.Thread | None = None
    runs: list[Any] = []  # RetrainingRun of each finished run, or the exception it raised
    # the training budget (TrainingParams) of the runs it starts; None: LOCAL_TRAINING. The local runtime
    # sets its own (`LocalRuntime.training`: the demo's is smaller)
    params: Any = None

    def __init__(self, endpoint: str, session: boto3.Session, margin: float,
                 say: Callable[[str], None] | None = None) -> None:
        self._endpoint, self._session, self._margin = endpoint, session, margin
        self._say = say or (lambda line: logger.info("retraining: %s", line.strip()))

    def start(self, reason: str, now: datetime) -> str:
        from feedbackloop.local.retrain import LOCAL_TRAINING, run_retraining

        cls = type(self)
        with cls._lock:
            if cls._thread is not None and cls._thread.is_alive():
                raise RetrainingRunningError(cls._thread.name)
            name = f"adjust-{now:%Y%m%dT%H%M%S}"

            def work() -> None:
                self._say(f"started: {reason}")
                try:
                    cls.runs.append(run_retraining(self._endpoint, self._session, cls.params or LOCAL_TRAINING,
                                                   self._margin, say=self._say))
                except Exception as error:  # the state machine's failure: recorded, the current model stays
                    logger.exception("local retraining failed")
                    cls.runs.append(error)

            cls._thread = threading.Thread(target=work, name=name, daemon=True)
            cls._thread.start()
            return name

    @classmethod
    def wait(cls, timeout: float | None = None) -> bool:
        """True when no run is going on any more; False when the current one outlived `timeout`."""
        thread = cls._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True


class Schedule(threading.Thread):
    """Invokes `invoke({"scheduled_time": ...})` every `interval` seconds of `clock` time, like the
    EventBridge Scheduler schedule with its input template."""

    def __init__(self, invoke: Callable[[dict], Any], clock: Callable[[], datetime],
                 interval: float = DEFAULT_INTERVAL_SECONDS) -> None:
        super().__init__(name="adjust-schedule", daemon=True)
        self._invoke, self._clock, self._interval = invoke, clock, interval
        self._stop = threading.Event()
        self.invocations = 0

    def run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._invoke({"scheduled_time": self._clock().isoformat()})
            except Exception:
                logger.exception("scheduled adjust run failed")  # as Lambda: the next one still comes
            self.invocations += 1

    def stop(self) -> None:
        self._stop.set()
