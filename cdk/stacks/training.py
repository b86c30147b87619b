"""FeedbackLoopTraining: the stateless retraining workflow (build tables, train, evaluate, gate, publish)
and its nightly schedule. The data it reads and writes (the lake, the models bucket, the registry) and
the permissions on them belong to the data stack; the table jobs it runs belong to the tables stack."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_glue as glue
from aws_cdk import aws_kms as kms
from constructs import Construct

from cdk.components.lake import Lake
from cdk.components.model_store import ModelStore
from cdk.components.retraining import Retraining
from cdk.project import ProjectLayout


class FeedbackLoopTraining(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        layout: ProjectLayout,
        lake: Lake,
        key: kms.IKey,
        model_store: ModelStore,
        glue_jobs: Mapping[str, glue.CfnJob],
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.retraining = Retraining(
            self, "Retraining", layout=layout, lake=lake, key=key, model_store=model_store, glue_jobs=glue_jobs
        )

        CfnOutput(self, "StateMachineArn", value=self.retraining.state_machine.state_machine_arn)
        CfnOutput(self, "ModelAlertsTopicArn", value=self.retraining.topic.topic_arn)
