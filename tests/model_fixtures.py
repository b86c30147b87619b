"""A published model for tests of serving: a small archive in the models bucket and the registry pointing
at it, as the retraining workflow leaves them (importable from every test: pytest puts tests/ on the path)."""

from __future__ import annotations

import io
import json
import tarfile

import boto3
import numpy as np

from feedbackloop.adapters.aws import DynamoModelRegistry
from feedbackloop.local.environment import physical_name
from feedbackloop.resources import MODELS_BUCKET, REGISTRY_TABLE


def publish_model(session: boto3.Session, items: list[str], users: list[str] = ("someone",),
                  user_factors: np.ndarray | None = None, item_factors: np.ndarray | None = None,
                  segments: dict[str, str] | None = None, version: str = "v1") -> None:
    """`segments`: user -> segment name (each segment's popular items: the catalog's order)."""
    users = list(users)
    arrays = {"item_ids": np.array(items), "item_factors": item_factors if item_factors is not None
              else np.ones((len(items), 4), dtype=np.float32),
              "popularity": np.arange(len(items), 0, -1, dtype=float), "user_ids": np.array(users),
              "user_factors": user_factors if user_factors is not None
              else np.ones((len(users), arrays_width(item_factors)), dtype=np.float32)}
    if segments:
        names = sorted(set(segments.values()))
        arrays |= {"segment_names": np.array(names),
                   "segment_top_items": np.array([np.arange(len(items))] * len(names)),
                   "segment_user_ids": np.array(list(segments)), "segment_labels": np.array(list(segments.values()))}
    npz, archive = io.BytesIO(), io.BytesIO()
    np.savez(npz, **arrays)
    document = json.dumps({"version": version, "params": {"alpha": 10.0, "regularization": 0.01,
                                                          "history_weight": 1.0}}).encode()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name, data in (("model.npz", npz.getvalue()), ("metrics.json", document)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    bucket = physical_name(MODELS_BUCKET.key)
    key = f"published/{version}/model.tar.gz"
    session.client("s3").put_object(Bucket=bucket, Key=key, Body=archive.getvalue())
    registry = DynamoModelRegistry(session, physical_name(REGISTRY_TABLE.key))
    current = registry.current()
    registry.publish({"version": version, "artifact": f"s3://{bucket}/{key}"},
                     replaces=None if current is None else current["version"])


def arrays_width(item_factors: np.ndarray | None) -> int:
    return 4 if item_factors is None else item_factors.shape[1]
