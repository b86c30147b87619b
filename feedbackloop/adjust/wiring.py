"""The adjust function's adapters. Apart from `feedbackloop.wiring` because this function ships no pandas
or pyarrow (its layer carries river and scipy instead), and that module's adapters import them."""

from __future__ import annotations

import boto3

from feedbackloop.adapters.control import (
    AppConfigPublisher,
    AthenaQueryRunner,
    CloudWatchMetricReader,
    DynamoAdjustState,
    DynamoDecisionLog,
    DynamoRunLease,
    SnsAlerter,
    StepFunctionsRetraining,
)
from feedbackloop.adjust.engine import Adjuster, RetrainingStarter
from feedbackloop.adjust.queries import LakeQueries, LakeTableNames, QueryRunner
from feedbackloop.adjust.rules import RuleSet
from feedbackloop.settings import AdjustSettings


def adjuster(settings: AdjustSettings, rules: RuleSet, session: boto3.Session, *,
             queries: QueryRunner | None = None, retraining: RetrainingStarter | None = None) -> Adjuster:
    """The AWS adapters; with `engine` local, DuckDB for Athena and the in-process retraining runner for
    Step Functions (moto runs neither), everything else against the local endpoint as in AWS."""
    if settings.engine == "local":
        from feedbackloop.local.adjust import DuckDBQueries, LocalRetraining  # not shipped to Lambda

        endpoint = session.client("s3").meta.endpoint_url
        queries = queries or DuckDBQueries(endpoint)
        retraining = retraining or LocalRetraining(endpoint, session, settings.local_gate_margin)
    tables = LakeTableNames(settings.events_table, settings.interactions_table, settings.engagement_table,
                            settings.user_daily_table)
    return Adjuster(
        rules=rules,
        lake=LakeQueries(queries or AthenaQueryRunner(session, settings.glue_database, settings.athena_workgroup),
                         tables),
        cloudwatch=CloudWatchMetricReader(session),
        config=AppConfigPublisher(session, settings.appconfig_application_id, settings.appconfig_environment_id,
                                  settings.appconfig_profile_id, settings.appconfig_strategy_id),
        retraining=retraining or StepFunctionsRetraining(session, settings.state_machine_arn),
        alerts=SnsAlerter(session, settings.alerts_topic_arn),
        state=DynamoAdjustState(session, settings.state_table),
        log=DynamoDecisionLog(session, settings.decisions_table, settings.decisions_ttl_days),
        lease=DynamoRunLease(session, settings.state_table),
    )
