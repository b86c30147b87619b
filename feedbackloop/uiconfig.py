"""Per-user UI configuration from the AppConfig document: the defaults, overridden by the user's
segment, and a deterministic experiment assignment (a hash of the experiment's salt and the user id).

In AWS the serving Lambda reads the document through the AppConfig Lambda extension (an HTTP agent on
localhost that polls AppConfig and caches); locally a stand-in agent serves the same path, so the same
`AgentConfigReader` runs in both.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.request
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

import fastjsonschema

SCHEMA_FILE, DEFAULT_FILE = "ui_config.schema.json", "ui_config.json"


class InvalidConfigError(ValueError):
    """A configuration document that the schema refuses (AppConfig's validator refuses it too)."""


@cache
def schema() -> dict[str, Any]:
    return json.loads(resources.files("feedbackloop.config").joinpath(SCHEMA_FILE).read_text())


def default_document() -> dict[str, Any]:
    return json.loads(resources.files("feedbackloop.config").joinpath(DEFAULT_FILE).read_text())


@cache
def _validator():
    return fastjsonschema.compile(schema())


def validate(document: Any) -> dict[str, Any]:
    try:
        _validator()(document)
    except fastjsonschema.JsonSchemaValueException as error:
        raise InvalidConfigError(f"{error.name}: {error.message}") from None
    for name, experiment in document["experiments"].items():
        if abs(sum(experiment["variants"].values()) - 1) > 1e-9:
            raise InvalidConfigError(f"data.experiments.{name}.variants: weights must sum to 1")
        unknown = sorted(set(experiment.get("exploration", {})) - set(experiment["variants"]))
        if unknown:
            raise InvalidConfigError(f"data.experiments.{name}.exploration: {unknown} are not variants")
    return document


def assign(user_id: str, salt: str, variants: dict[str, float]) -> str:
    """The user's variant: a uniform point from sha256(salt:user), placed on the cumulative weights
    (names in sorted order so the document's key order does not matter)."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64
    cumulative = 0.0
    names = sorted(variants)
    for name in names:
        cumulative += variants[name]
        if point < cumulative:
            return name
    return names[-1]


def config_for(document: dict[str, Any], user_id: str, segment: str | None) -> dict[str, Any]:
    defaults = document["defaults"]
    override = document["segments"].get(segment or "", {})
    return {
        "user_id": user_id,
        "segment": segment,
        "flags": defaults["flags"] | override.get("flags", {}),
        "layout": defaults["layout"] | override.get("layout", {}),
        "experiments": {name: assign(user_id, e["salt"], e["variants"])
                        for name, e in sorted(document["experiments"].items())},
    }


# The experiment whose variants are rankings: a user's arm decides their ordering (A/B: personalized
# against a popularity control). Its variant names are orderings of the layout schema.
RANKING_EXPERIMENT = "ranking"


def ordering_of(config: dict[str, Any]) -> str:
    """How the user's recommendations are ranked: their arm of the ranking experiment, when it names an
    ordering, else the layout's."""
    variant = config["experiments"].get(RANKING_EXPERIMENT)
    orderings = schema()["definitions"]["layout"]["properties"]["ordering"]["enum"]
    return variant if variant in orderings else config["layout"].get("ordering", "personalized")


class AgentConfigReader:
    """Reads a configuration profile the way a Lambda reads it through the AppConfig extension:
    GET {agent}/applications/{application}/environments/{environment}/configurations/{profile},
    kept for `ttl_seconds` (the agent itself polls AppConfig and caches)."""

    def __init__(self, agent_url: str, application: str, environment: str, profile: str, ttl_seconds: float = 30,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = f"{agent_url.rstrip('/')}/applications/{application}/environments/{environment}/" \
                   f"configurations/{profile}"
        self._ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._document: dict[str, Any] | None = None
        self._read_at = -float("inf")
        self.version: str | None = None

    def get(self) -> dict[str, Any]:
        with self._lock:
            if self._document is None or self._clock() - self._read_at >= self._ttl:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    self._document = validate(json.loads(response.read()))
                    self.version = response.headers.get("Configuration-Version")
                self._read_at = self._clock()
            return self._document
