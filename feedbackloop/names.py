"""One source for every name that more than one part of the system uses.

The CDK constructs, the Lambda handlers, the local runtime and the tests import these; none of
them spells a metric, table or resource name of its own.
"""

from __future__ import annotations

from enum import StrEnum

SERVICE = "feedbackloop"
METRICS_NAMESPACE = "FeedbackLoop"
# Powertools' EMF adds this dimension to every metric, valued `service=` or POWERTOOLS_SERVICE_NAME. Every
# function emits its metrics with service=SERVICE: the dashboards and alarms address a metric by it.
SERVICE_DIMENSION = "service"


class Function(StrEnum):
    """Each Lambda function's own name: the `service` of its logs and traces (Powertools' Logger and Tracer,
    POWERTOOLS_SERVICE_NAME in its environment, in AWS and in the local runtime alike). The value is the
    handler's package under `lambdas/`: `lambdas.eraser.handler.lambda_handler` is the eraser."""

    INGEST = "ingest"
    CLEANER = "cleaner"
    SERVING = "serving"
    ERASER = "eraser"
    ADJUST = "adjust"
    RETRAIN = "retrain"  # the retraining workflow's Evaluate and Publish functions, one handler module

    @classmethod
    def of_handler(cls, handler: str) -> Function:
        """The function a handler belongs to, from its module path ("lambdas.<name>.handler[.attribute]")."""
        parts = handler.split(".")
        if len(parts) < 3 or parts[0] != "lambdas" or parts[2] != "handler":
            raise ValueError(f"{handler!r} is not a handler under lambdas/<function>/handler.py")
        return cls(parts[1])


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
    # requests the serving function answered with a 5xx: a UI config deployment rolls back on it
    SERVING_ERRORS = "ServingErrors"
    ERASURES_REQUESTED = "ErasuresRequested"
    ERASURES_COMPLETED = "ErasuresCompleted"
    # the adjust function (rules and drift; ADR 0009)
    RULE_EVALUATIONS = "RuleEvaluations"  # with the `rule` dimension: one per rule and scope evaluated
    RULE_FIRED = "RuleFired"  # with the `rule` dimension: the rule acted
    RULE_DEFERRED = "RuleDeferred"  # with the `rule` dimension: it would act, but could not yet (retried)
    CONFIG_DEPLOYMENTS_STARTED = "ConfigDeploymentsStarted"
    RETRAINING_STARTED = "RetrainingStarted"
    ALERTS_SENT = "AlertsSent"
    DRIFT_DETECTED = "DriftDetected"  # with the `stream` dimension (feedback_score, ctr/<segment>)
    ADJUST_ERRORS = "AdjustErrors"  # a rule or detector that failed to evaluate (the others still run)
    ADJUST_SKIPPED = "AdjustSkipped"  # a run that found another holding the lease and did nothing
    # the loop's effect, from the engagement layer (with `segment` and `variant` dimensions, '*' = all)
    CTR = "Ctr"
    CONVERSION_RATE = "ConversionRate"
    AVG_SESSION_SECONDS = "AvgSessionSeconds"
    BOUNCE_RATE = "BounceRate"
    RATING_MEAN = "RatingMean"
    NPS = "Nps"
    FEEDBACK_RETENTION_CORRELATION = "FeedbackRetentionCorrelation"
    FEEDBACK_CONVERSION_CORRELATION = "FeedbackConversionCorrelation"
    # experiments (with the `experiment` dimension)
    SAMPLE_RATIO_MISMATCH = "SampleRatioMismatch"  # 1 when the chi-squared SRM test has p < 0.001


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
    # the user's erasure was requested after the event happened: a record still on the stream (it keeps
    # seven days) is kept out of the lake and the online store (ADR 0013)
    ERASED_USER = "erased_user"


# Dimensions of the metrics above.
REASON_DIMENSION = "reason"
RULE_DIMENSION = "rule"
STREAM_DIMENSION = "stream"
SEGMENT_DIMENSION = "segment"
VARIANT_DIMENSION = "variant"
EXPERIMENT_DIMENSION = "experiment"
