"""FeedbackLoopTables: the stateless jobs that build the modelled lake tables from the curated events
(Glue Python shell jobs driving Athena, chained by a Glue workflow). The tables themselves, their
buckets and the permission to write them belong to the data stack."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_kms as kms
from constructs import Construct

from cdk.components.lake import Lake
from cdk.components.table_jobs import TableJobs
from cdk.naming import pascal_case


class FeedbackLoopTables(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, lake: Lake, key: kms.IKey, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.table_jobs = TableJobs(self, "TableJobs", lake=lake, key=key)

        for name, job in self.table_jobs.jobs.items():
            CfnOutput(self, f"{pascal_case(name)}JobName", value=job.ref)
        CfnOutput(self, "WorkflowName", value=self.table_jobs.workflow.ref)
        CfnOutput(self, "WorkgroupName", value=self.table_jobs.workgroup.ref)
