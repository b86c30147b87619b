"""JSON as RFC 8259 defines it, for every body and record the system reads from a client.

Python's parser is lenient where the contract must not be: it accepts the non-standard `NaN`,
`Infinity` and `-Infinity` literals (and turns `1e999` into infinity), resolves a repeated key by
keeping the last, and fails with a bare ValueError on an integer over its int-string limit (4,300
digits) or with a RecursionError on deep nesting. One non-finite price poisons every revenue
aggregate downstream, so all of these are refused here, each with a reason a client can act on.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_NUMBER_DIGITS = 100  # no field of the contract needs more; well under Python's int-string limit


class JsonRefusedError(json.JSONDecodeError):
    """Text that is not strict JSON: `kind` names the problem (an error code), `msg` explains it.

    A JSONDecodeError, so parsers that catch that (Powertools' body validation) treat it as one."""

    def __init__(self, kind: str, msg: str, doc: str = "", pos: int = 0) -> None:
        super().__init__(msg, doc, pos)
        self.kind = kind

    def __reduce__(self):  # picklable with its own arguments
        return type(self), (self.kind, self.msg, self.doc, self.pos)


def _constant(name: str) -> Any:
    raise JsonRefusedError("non_finite_number", f"{name} is not a JSON number (non-finite numbers are refused)")


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_DIGITS:
        raise JsonRefusedError("number_too_long", f"a number of {len(text)} characters (at most {MAX_NUMBER_DIGITS})")
    value = float(text)
    if not math.isfinite(value):
        raise JsonRefusedError("non_finite_number", f"{text[:40]} is out of a double's range")
    return value


def _int(text: str) -> int:
    if len(text) > MAX_NUMBER_DIGITS:
        raise JsonRefusedError("number_too_long", f"a number of {len(text)} digits (at most {MAX_NUMBER_DIGITS})")
    return int(text)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        repeated = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise JsonRefusedError("duplicate_key", f"the key {json.dumps(repeated)[:80]} appears more than once "
                                                "in one object")
    return document


def loads(text: str | bytes) -> Any:
    """Parse strict JSON; JsonRefusedError (a JSONDecodeError) says why text is not."""
    try:
        return json.loads(text, parse_constant=_constant, parse_float=_float, parse_int=_int,
                          object_pairs_hook=_object)
    except JsonRefusedError:
        raise
    except json.JSONDecodeError as error:
        raise JsonRefusedError("malformed_json", f"line {error.lineno} column {error.colno}: {error.msg}",
                               error.doc, error.pos) from None
    except RecursionError:
        raise JsonRefusedError("nested_too_deeply", "arrays and objects are nested too deeply") from None
    except ValueError as error:  # e.g. Python's own int-string limit, should a parse hook not see it first
        raise JsonRefusedError("malformed_json", str(error)[:200]) from None


def is_json_media_type(content_type: str | None) -> bool:
    """Whether a request's Content-Type declares JSON: `application/json`, any parameters (a charset)
    allowed; no header at all is taken as JSON, as most clients that send JSON leave it out."""
    if content_type is None or not content_type.strip():
        return True
    return content_type.split(";", 1)[0].strip().lower() == "application/json"
