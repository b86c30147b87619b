"""The CDK app: `python -m cdk.app` (or `cdk synth`) from the project root, offline, no credentials.

Stacks are environment-agnostic: account and region come from the deploying credentials.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from aws_cdk import App, Validations
from cdk_nag import AwsSolutionsChecks

from cdk.deployment import Deployment, DeploymentContextError
from cdk.project import LambdaLayerMissingError, ProjectLayout
from cdk.stacks.adjust import FeedbackLoopAdjust
from cdk.stacks.data import FeedbackLoopData
from cdk.stacks.ingest import FeedbackLoopIngest
from cdk.stacks.monitoring import FeedbackLoopMonitoring
from cdk.stacks.serving import FeedbackLoopServing
from cdk.stacks.tables import FeedbackLoopTables
from cdk.stacks.training import FeedbackLoopTraining
from feedbackloop.resources import (  # the stack names, shared with `feedbackloop smoke`
    ADJUST_STACK,
    DATA_STACK,
    INGEST_STACK,
    MONITORING_STACK,
    SERVING_STACK,
    STACKS,  # noqa: F401 - every stack, re-exported for the nag and lint tests
    TABLES_STACK,
    TRAINING_STACK,
)


def build_app(layout: ProjectLayout, outdir: str | None = None, context: dict[str, Any] | None = None) -> App:
    """The stacks with the AwsSolutions checks; `app.synth()` fails on any unacknowledged finding.

    `outdir` None: the CDK CLI's CDK_OUTDIR (or, without it, a temporary directory). `context`: the
    deployment's choices (`cdk/deployment.py`) over cdk.json's, as `-c key=value` gives them to the CLI.
    A stage prefixes every stack id (`Deployment.stack_id`), hence every name generated from a path.
    """
    app = App(outdir=outdir, context={**layout.cdk_context(), **(context or {})})
    deployment = Deployment.of(app)  # DeploymentContextError on a bad value, before any construct
    data = FeedbackLoopData(
        app,
        deployment.stack_id(DATA_STACK),
        description="feedbackloop: event stream, lake, catalog, cleaner state, model registry, online store, "
        "erasure audit and queue, adjust decisions, and raw archive",
    )
    ingest = FeedbackLoopIngest(
        app,
        deployment.stack_id(INGEST_STACK),
        description="feedbackloop: ingestion API and cleaner",
        layout=layout,
        event_stream=data.event_stream,
        lake=data.lake,
        cleaner_state=data.cleaner_state,
        online_store=data.online_store,
    )
    tables = FeedbackLoopTables(
        app,
        deployment.stack_id(TABLES_STACK),
        description="feedbackloop: the Glue jobs and Athena workgroup that build the modelled lake tables",
        lake=data.lake,
        key=data.key,
    )
    training = FeedbackLoopTraining(
        app,
        deployment.stack_id(TRAINING_STACK),
        description="feedbackloop: the nightly retraining workflow (build tables, train, evaluate, gate, publish)",
        layout=layout,
        lake=data.lake,
        key=data.key,
        model_store=data.model_store,
        glue_jobs=tables.table_jobs.jobs,
    )
    serving = FeedbackLoopServing(
        app,
        deployment.stack_id(SERVING_STACK),
        description="feedbackloop: the serving API (recommendations, UI configuration, preferences, erasure), "
        "its function, the UI configuration in AppConfig and the eraser",
        layout=layout,
        lake=data.lake,
        model_store=data.model_store,
        online_store=data.online_store,
        erasure_store=data.erasure_store,
    )
    if ingest.ingestion_api.sets_account_logging_role:
        serving.add_stack_dependency(ingest, "the ingestion API sets the account's API Gateway CloudWatch role")
    monitoring = FeedbackLoopMonitoring(
        app,
        deployment.stack_id(MONITORING_STACK),
        description="feedbackloop: the effect and health dashboards, the alarms and the operator alerts topic",
        event_stream=data.event_stream,
        cleaner_state=data.cleaner_state,
        ingestion_api=ingest.ingestion_api,
        cleaner=ingest.cleaner,
        table_jobs=tables.table_jobs,
        retraining=training.retraining,
        serving_api=serving.serving_api,
    )
    FeedbackLoopAdjust(
        app,
        deployment.stack_id(ADJUST_STACK),
        description="feedbackloop: the adjust function (trigger rules and drift detectors acting on the UI "
        "config, retraining and alerts) and its 5-minute schedule",
        layout=layout,
        lake=data.lake,
        adjust_store=data.adjust_store,
        table_jobs=tables.table_jobs,
        ui_config=serving.ui_config,
        retraining=training.retraining.state_machine,
        alerts=monitoring.monitoring.topic,
    )
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


def main() -> None:
    layout = ProjectLayout(root=Path.cwd())
    # Under the CDK CLI, CDK_OUTDIR says where to write; run as plain python, write where the CLI would.
    outdir = None if "CDK_OUTDIR" in os.environ else str(layout.cdk_output_dir)
    try:
        app = build_app(layout, outdir=outdir)
    except (LambdaLayerMissingError, DeploymentContextError) as error:
        raise SystemExit(f"error: {error}") from None
    app.synth()


if __name__ == "__main__":
    main()
