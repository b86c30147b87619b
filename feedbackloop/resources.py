"""What the system is made of, in one list: the CDK constructs and the local runtime both build
their resources from these specs, and an infra test checks the synthesized template against them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from feedbackloop.names import Metric


@dataclass(frozen=True)
class StreamSpec:
    key: str
    shards: int
    retention_hours: int


@dataclass(frozen=True)
class BucketSpec:
    key: str
    purpose: str
    expire_days: int | None  # None: kept until erased
    infrequent_access_days: int | None = None


@dataclass(frozen=True)
class KeyValueTableSpec:
    key: str
    partition_key: str
    ttl_attribute: str | None
    purpose: str
    sort_key: str | None = None  # a string range key, for tables read as a time series per partition


@dataclass(frozen=True)
class QueueSpec:
    key: str
    purpose: str
    retention_days: int
    fifo: bool = False  # one message group: handled one at a time, in order

    @property
    def name_suffix(self) -> str:
        return ".fifo" if self.fifo else ""


GLUE_DATABASE = "feedbackloop"

# The CloudFormation stacks (cdk/app.py builds them; `feedbackloop smoke` reads their outputs). A stage
# (`-c stage=dev`) prefixes each: `stack_name(DATA_STACK, "dev")` is "dev-FeedbackLoopData".
DATA_STACK = "FeedbackLoopData"
INGEST_STACK = "FeedbackLoopIngest"
TABLES_STACK = "FeedbackLoopTables"
TRAINING_STACK = "FeedbackLoopTraining"
SERVING_STACK = "FeedbackLoopServing"
MONITORING_STACK = "FeedbackLoopMonitoring"
ADJUST_STACK = "FeedbackLoopAdjust"
STACKS = (DATA_STACK, INGEST_STACK, TABLES_STACK, TRAINING_STACK, SERVING_STACK, MONITORING_STACK, ADJUST_STACK)


def stack_name(base: str, stage: str | None) -> str:
    return f"{stage}-{base}" if stage else base


def glue_database(stage: str | None) -> str:
    return f"{stage}_{GLUE_DATABASE}" if stage else GLUE_DATABASE

EVENT_STREAM = StreamSpec(key="events", shards=2, retention_hours=168)

RAW_BUCKET = BucketSpec("raw", "every accepted record, unchanged, for audit and replay", None, 30)
CURATED_BUCKET = BucketSpec("curated", "clean Parquet tables", None, 90)
QUARANTINE_BUCKET = BucketSpec("quarantine", "rejected records with a typed reason", 365)
QUERY_RESULTS_BUCKET = BucketSpec("query-results", "Athena query results of the table jobs", 7)
MODELS_BUCKET = BucketSpec("models", "training outputs (candidates) and published model versions", None)
BUCKETS = (RAW_BUCKET, CURATED_BUCKET, QUARANTINE_BUCKET, QUERY_RESULTS_BUCKET, MODELS_BUCKET)
# Layout of the models bucket: SageMaker writes <CANDIDATES_PREFIX><job name>/output/model.tar.gz;
# publishing copies a candidate to <PUBLISHED_PREFIX><version>/.
CANDIDATES_PREFIX = "candidates/"
PUBLISHED_PREFIX = "published/"

DEDUP_TABLE = KeyValueTableSpec(
    "dedup", "event_id", "expires_at", "event ids already committed, and the object that holds each"
)
STATE_TABLE = KeyValueTableSpec("state", "key", None, "streaming statistics the cleaner keeps between batches")
REGISTRY_TABLE = KeyValueTableSpec("registry", "key", None,
                                   "the published model: a 'current' pointer and one record per version")
ONLINE_TABLE = KeyValueTableSpec("online", "user_id", "expires_at",
                                 "each user's recent feedback per item (decayed) and their preferences")
# One item per catalogue item: forward-decayed counts of recent examinations, clicks and purchases that
# the cleaner ADDs to and serving reads (feedbackloop/item_counters.py, ADR 0018). No user in it.
ITEM_COUNTERS_TABLE = KeyValueTableSpec("item-counters", "item_id", "expires_at",
                                        "each item's recent examinations, clicks and purchases (decayed)")
ERASURE_TABLE = KeyValueTableSpec("erasures", "user_id", None, "erasure requests and what they removed (the audit)")
# partition "rule#<name>" or "drift#<stream>", sort "<ISO time>#<scope>": every decision of the adjust
# function (ADR 0009), so "what did this rule decide last week, and why" is one Query
DECISIONS_TABLE = KeyValueTableSpec("decisions", "subject", "expires_at",
                                    "every rule decision and drift event, with the values seen and the action",
                                    sort_key="at")
KEY_VALUE_TABLES = (DEDUP_TABLE, STATE_TABLE, REGISTRY_TABLE, ONLINE_TABLE, ITEM_COUNTERS_TABLE, ERASURE_TABLE,
                    DECISIONS_TABLE)
ONLINE_TTL_DAYS = 180  # a profile untouched this long expires (the nightly model still knows the user)
ITEM_COUNTERS_TTL_DAYS = 30  # an item nobody saw for a month has no recent counts left to keep

CLEANER_FAILURES = QueueSpec("cleaner-failures", "batches the cleaner gave up on after bounded retries", 14)
# FIFO with one message group: two erasures never rewrite the same object at once (the later write
# would put the other user's rows back)
ERASURE_REQUESTS = QueueSpec("erasure-requests", "users to erase from the lake, for the eraser function", 14,
                             fifo=True)
ERASURE_MESSAGE_GROUP = "erasures"
QUEUES = (CLEANER_FAILURES, ERASURE_REQUESTS)

# The lake's tables (`feedbackloop.lake`): LAKE_TABLES, CLEANER_LAKE_TABLES (the cleaner writes these) and
# MODELLED_LAKE_TABLES (the table jobs, glue_jobs/, build these). Their schemas are Arrow's, so they are
# read from `feedbackloop.lake` on first use (`__getattr__` below): a function that never asks for them
# (serving, ingest) imports this module without pyarrow.
_LAKE_TABLE_SETS = {"LAKE_TABLES": "TABLES", "CLEANER_LAKE_TABLES": "CLEANER_TABLES",
                    "MODELLED_LAKE_TABLES": "MODELLED_TABLES"}


def __getattr__(name: str) -> Any:
    if name in _LAKE_TABLE_SETS:
        from feedbackloop import lake

        return getattr(lake, _LAKE_TABLE_SETS[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

# The Athena workgroup of the table jobs: it enforces its result location, encryption and this limit.
ATHENA_BYTES_SCANNED_CUTOFF = 10 * 1024**3  # per query; a runaway query fails instead of costing

# Raw archive layout, the same in Firehose's prefix and the local archiver.
RAW_PREFIX = "raw/events/"
RAW_ERROR_PREFIX = "raw/errors/"
RAW_SUFFIX = ".jsonl.gz"  # gzip-compressed JSON lines, one stream record a line
# How long an event id is remembered for de-duplication (a replay older than this is re-admitted).
DEDUP_TTL_DAYS = 400


@dataclass(frozen=True)
class TopicSpec:
    key: str
    purpose: str


# One topic for everything an operator must act on: CloudWatch alarms, rule alerts, rejected models.
ALERTS_TOPIC = TopicSpec("alerts", "what an operator must act on: alarms, rule alerts, rejected models")
TOPICS = (ALERTS_TOPIC,)


@dataclass(frozen=True)
class ConfigProfileSpec:
    application: str
    environment: str
    profile: str


# The UI configuration in AppConfig (names are AppConfig's, not physical resources: the same in every
# account); its schema and first document are feedbackloop/config/.
UI_CONFIG = ConfigProfileSpec(application="feedbackloop", environment="live", profile="ui")


@dataclass(frozen=True)
class DeploymentStrategySpec:
    """How an AppConfig deployment rolls out: `growth_factor` percent of readers per step (LINEAR adds it
    each step, EXPONENTIAL doubles it), the steps spread over `duration_minutes`, then `bake_minutes`
    watching the environment's alarms before the deployment completes."""

    growth_type: str  # LINEAR | EXPONENTIAL
    growth_factor: float  # percent
    duration_minutes: int
    bake_minutes: int


# Every change of the UI configuration after the first: linear 20% every minute (five steps over five
# minutes), then a five-minute bake. The CDK strategy, the local runtime and the rules function use it.
UI_CONFIG_ROLLOUT = DeploymentStrategySpec(growth_type="LINEAR", growth_factor=20, duration_minutes=5, bake_minutes=5)


@dataclass(frozen=True)
class AlarmSpec:
    key: str
    metric: Metric  # in METRICS_NAMESPACE, with the `service` dimension Powertools adds to every metric
    statistic: str
    period_seconds: int
    evaluation_periods: int
    threshold: float
    comparison: str
    purpose: str


# The monitor of the UI config environment: while a deployment rolls out or bakes, one 5xx of the serving
# function in a minute rolls it back to the previous version.
CONFIG_ROLLBACK_ALARM = AlarmSpec(
    key="config-rollback",
    metric=Metric.SERVING_ERRORS,
    statistic="Sum",
    period_seconds=60,
    evaluation_periods=1,
    threshold=1,
    comparison="GreaterThanOrEqualToThreshold",
    purpose="the serving function answers with errors: roll the UI config deployment back",
)
