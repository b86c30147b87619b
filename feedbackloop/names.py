"""One source for every name that more than one part of the system uses.

The CDK constructs, the Lambda handlers, the local runtime and the tests import these; none of
them spells a metric, table or resource name of its own.
"""

from __future__ import annotations

from enum import StrEnum

SERVICE = "feedbackloop"
METRICS_NAMESPACE = "FeedbackLoop"


class Metric(StrEnum):
    """CloudWatch metric names (emitted as EMF by the handlers, charted by the dashboards)."""

    EVENTS_RECEIVED = "EventsReceived"
    EVENTS_ACCEPTED = "EventsAccepted"
    EVENTS_REJECTED = "EventsRejected"
    EVENTS_THROTTLED = "EventsThrottled"
    REQUESTS_REJECTED = "RequestsRejected"
    RECORDS_IN = "RecordsIn"
    RECORDS_CLEAN = "RecordsClean"
    RECORDS_QUARANTINED = "RecordsQuarantined"
    RECORDS_QUARANTINED_BY_REASON = "RecordsQuarantinedByReason"  # with the `reason` dimension
    RECORDS_DUPLICATE = "RecordsDuplicate"
    RECORDS_IMPUTED = "RecordsImputed"
    RECORDS_FAST_PATH = "RecordsFastPath"  # proven valid by the vectorized checks (the rest: per record)
    BATCH_ITEM_FAILURES = "BatchItemFailures"
    CONSERVATION_GAP = "ConservationGap"
    MODEL_CANDIDATE_NDCG = "ModelCandidateNdcgAt10"  # hold-out NDCG@10 of each trained candidate
    MODEL_GATE_PASSED = "ModelGatePassed"
    MODEL_GATE_REJECTED = "ModelGateRejected"  # the current model stays: an alarm's signal
    MODEL_PUBLISHED = "ModelPublished"
    RECOMMENDATIONS_SERVED = "RecommendationsServed"
    RECOMMENDATIONS_FALLBACK = "RecommendationsFallback"  # popularity: unknown user, no model vector or opted out
    ONLINE_PROFILES_UPDATED = "OnlineProfilesUpdated"
    PREFERENCES_CHANGED = "PreferencesChanged"
    CONFIG_SERVED = "ConfigServed"
    ERASURES_REQUESTED = "ErasuresRequested"
    ERASURES_COMPLETED = "ErasuresCompleted"


class QuarantineReason(StrEnum):
    """Why a record did not reach the curated zone. Every quarantined row carries exactly one."""

    SCHEMA_VIOLATION = "schema_violation"
    UNKNOWN_VERSION = "unknown_version"
    MALFORMED_JSON = "malformed_json"
    NOT_UTF8 = "not_utf8"
    OVERSIZED = "oversized"
    MISSING_VALUE = "missing_value"
    DUPLICATE = "duplicate"
    OUTLIER = "outlier"
    TOO_OLD = "too_old"
    FUTURE = "future"
    PROCESSING_ERROR = "processing_error"


# Dimension under which per-reason quarantine counts are emitted.
REASON_DIMENSION = "reason"
