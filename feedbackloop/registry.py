"""The published-model registry and the artifact store, as the retraining workflow and serving see them
(adapters: `adapters.aws.DynamoModelRegistry`, `S3Artifacts`; `adapters.memory`)."""

from __future__ import annotations

from typing import Any, Protocol

CURRENT_KEY = "current"


class StaleRegistryError(RuntimeError):
    """Another publication moved the current pointer since this run evaluated."""


class ModelRegistry(Protocol):
    def current(self) -> dict[str, Any] | None:
        """The published model's record, or None before the first publication."""

    def publish(self, record: dict[str, Any], replaces: str | None) -> None:
        """Point `current` at `record`, only if it still points at `replaces` (None: at nothing)."""


class Artifacts(Protocol):
    def read(self, url: str) -> bytes: ...

    def copy(self, source_url: str, target_url: str) -> None: ...
