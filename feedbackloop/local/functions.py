"""Invoke the real Lambda handlers in-process, one at a time per function (as one warm container),
with a Lambda-shaped context, and forward what they print the way CloudWatch Logs would: EMF
documents become CloudWatch metrics on the local endpoint, the rest goes to a log file."""

from __future__ import annotations

import importlib
import io
import json
import threading
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3

from feedbackloop.local.environment import REGION
from feedbackloop.names import Function


@dataclass
class LambdaContext:
    function_name: str
    memory_limit_in_mb: int = 1024
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:000000000000:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


class LocalFunction:
    """A handler by its module path, e.g. "lambdas.cleaner.handler.lambda_handler"; named as the function it
    belongs to (names.Function), the `service` of its logs."""

    def __init__(self, handler: str, lock: threading.Lock | None = None,
                 after_invoke: Callable[[dict], None] | None = None) -> None:
        self.name = Function.of_handler(handler).value
        # called with the event: e.g. wake the consumers of what the function may have written to
        self._after = after_invoke
        self._handler_path = handler
        self._handler: Callable[[dict, Any], Any] | None = None
        self._lock = lock or threading.Lock()  # shared by functions that must not run at once in one process
        self.invocations = 0
        self.errors = 0

    def invoke(self, event: dict) -> Any:
        try:
            return self._invoke(event)
        finally:
            if self._after is not None:
                self._after(event)

    def _invoke(self, event: dict) -> Any:
        with self._lock:
            if self._handler is None:
                module, _, attribute = self._handler_path.rpartition(".")
                self._handler = getattr(importlib.import_module(module), attribute)
            self.invocations += 1
            context = LambdaContext(self.name)
            try:
                return self._handler(event, context)
            except BaseException as error:  # as Lambda: even an exit is a failed invocation, not a dead poller
                self.errors += 1
                # the runtime's own record of a failed invocation, in the function's log, as Lambda writes it
                print(json.dumps({"errorMessage": str(error)[:2000], "errorType": type(error).__name__,
                                  "requestId": context.aws_request_id, "function": self.name,
                                  "stackTrace": traceback.format_exception(error)}), flush=True)
                if isinstance(error, Exception):
                    raise
                raise RuntimeError(f"{self.name} exited: {error!r}") from error


INGEST_FUNCTION = "lambdas.ingest.handler.lambda_handler"
CLEANER_FUNCTION = "lambdas.cleaner.handler.lambda_handler"
SERVING_FUNCTION = "lambdas.serving.handler.lambda_handler"
ERASER_FUNCTION = "lambdas.eraser.handler.lambda_handler"
ADJUST_FUNCTION = "lambdas.adjust.handler.lambda_handler"


class LogSink(io.TextIOBase):
    """Stands in for stdout while the local runtime runs handlers."""

    def __init__(self, log_file: Path, session: boto3.Session) -> None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        self._file = log_file.open("a", encoding="utf-8")
        self._cloudwatch = session.client("cloudwatch")
        self._lock = threading.Lock()
        self._partial = ""
        self.metric_documents = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self._file.write(text)
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
        for line in lines:
            if line.startswith("{") and '"_aws"' in line:
                self._forward(line)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self._file.flush()

    def _forward(self, line: str) -> None:
        try:
            document = json.loads(line)
            directive = document["_aws"]["CloudWatchMetrics"][0]
        except (ValueError, KeyError, IndexError):
            return
        dimensions = [{"Name": d, "Value": str(document[d])} for group in directive["Dimensions"] for d in group
                      if d in document]
        timestamp = datetime.fromtimestamp(document["_aws"]["Timestamp"] / 1000, UTC)
        data = []
        for metric in directive["Metrics"]:
            values = document.get(metric["Name"])
            for value in values if isinstance(values, list) else [values]:  # EMF allows a value or a list
                data.append({"MetricName": metric["Name"], "Value": float(value), "Unit": metric.get("Unit", "None"),
                             "Dimensions": dimensions, "Timestamp": timestamp})
        if data:
            self._cloudwatch.put_metric_data(Namespace=directive["Namespace"], MetricData=data)
            self.metric_documents += 1
