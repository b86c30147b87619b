"""Every function logs and traces under its own name (issue 18: the eraser logged as `serving`, the cleaner as
`ingest`), from one source: names.Function, which the handlers, the CDK construct (POWERTOOLS_SERVICE_NAME,
checked in tests/infra/test_infra_monitoring_stack.py) and the local runtime all derive from the handler path.
Its metrics keep the application's `service` dimension, which the dashboards and alarms address."""

from __future__ import annotations

import importlib
import io
import json
from pathlib import Path

import pytest

from feedbackloop.local.functions import (
    ADJUST_FUNCTION,
    CLEANER_FUNCTION,
    ERASER_FUNCTION,
    INGEST_FUNCTION,
    SERVING_FUNCTION,
    LocalFunction,
)
from feedbackloop.names import SERVICE, Function

pytestmark = pytest.mark.unit

HANDLER_MODULES = sorted(f"lambdas.{p.parent.name}.handler"
                         for p in (Path(__file__).parents[2] / "lambdas").glob("*/handler.py"))


def test_every_handler_package_is_a_named_function_and_every_name_has_a_handler() -> None:
    assert {Function.of_handler(m) for m in HANDLER_MODULES} == set(Function)


@pytest.mark.parametrize("module", HANDLER_MODULES)
def test_each_handler_logs_and_traces_under_its_own_name_and_meters_under_the_application(module) -> None:
    handler = importlib.import_module(module)
    own = Function.of_handler(module)
    assert handler.logger.service == own
    assert handler.tracer.service == own
    assert handler.metrics.service == SERVICE


def test_a_log_line_names_its_own_function_when_several_run_in_one_process() -> None:
    """The local runtime runs every handler in one process: a Logger of one function must not take another's
    service or keys (Powertools shares a logging.Logger, and its formatter, between Loggers of one service)."""
    eraser, serving = (importlib.import_module(m) for m in ("lambdas.eraser.handler", "lambdas.serving.handler"))
    written = io.StringIO()
    stream = eraser.logger.registered_handler.setStream(written)
    serving.logger.append_keys(function_name="serving")
    try:
        eraser.logger.info("from the eraser")
    finally:
        serving.logger.remove_keys(["function_name"])
        eraser.logger.registered_handler.setStream(stream)
    (line,) = [json.loads(t) for t in written.getvalue().splitlines() if "from the eraser" in t]
    # serving's key does not reach the eraser's line (an earlier invocation in this process may have left
    # the eraser's own function_name, from its Lambda context)
    assert line["service"] == Function.ERASER and line.get("function_name") != "serving"


@pytest.mark.parametrize("handler", [INGEST_FUNCTION, CLEANER_FUNCTION, SERVING_FUNCTION, ERASER_FUNCTION,
                                     ADJUST_FUNCTION])
def test_the_local_runtime_names_each_function_as_its_handler(handler) -> None:
    assert LocalFunction(handler).name == Function.of_handler(handler)


@pytest.mark.parametrize("path", ["lambdas.ingest", "feedbackloop.ingest.handler", "lambdas.nothing.handler"])
def test_a_path_that_is_no_function_handler_is_refused(path) -> None:
    with pytest.raises(ValueError):
        Function.of_handler(path)
