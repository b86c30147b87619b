"""The table jobs: one Glue Python shell job per entry of `glue_jobs.build_tables.JOBS`, chained by a
Glue workflow along their `after` graph, running their SQL in an Athena workgroup of their own.

Each job is the same script (`glue_jobs/build_tables.py`) with `--job <name>`; it reads the SQL files
from the SQL asset and drives Athena, which reads the curated events and replaces whole partitions
of the modelled tables (`resources.MODELLED_LAKE_TABLES`). The data-side permissions (lake objects,
the data key, catalog partitions) are the Lake's `builder_policy`; this construct adds what belongs to
the jobs: the workgroup, the assets, the logs and their key.

Logs and job bookmarks are encrypted with a key of their own rather than the data key: CloudWatch
Logs needs a key-policy statement for its service principal, and the data key's policy (in the
stateful stack) stays free of service principals that never read lake data. What the jobs write to
S3 uses the data key, as the buckets do.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Aws, Duration, Names, Stack
from aws_cdk import aws_athena as athena
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3_assets as assets
from constructs import Construct

import glue_jobs.build_tables as build_tables
from cdk import nag
from cdk.components.lake import Lake
from cdk.naming import pascal_case
from feedbackloop.models.contract import HALF_LIFE_DAYS
from feedbackloop.resources import ATHENA_BYTES_SCANNED_CUTOFF, QUERY_RESULTS_BUCKET

PYTHON_VERSION = "3.9"  # the Python shell runtime the script is written for (see glue_jobs/)
GLUE_VERSION = "3.0"  # the Glue version of Python shell 3.9
MAX_CAPACITY = 0.0625  # 1/16 DPU: the script only waits on Athena
LIBRARY_SET = "analytics"  # Python shell 3.9's preloaded libraries, awswrangler among them
# Hourly; a run that outlasts the hour skips the next one (one workflow run at a time).
SCHEDULE = "cron(0 * * * ? *)"
JOB_TIMEOUT = Duration.minutes(30)
ATHENA_ENGINE = "Athena engine version 3"
# Glue names the log groups of a job run with a security configuration itself (under /aws-glue/).
GLUE_LOG_GROUPS = "/aws-glue/*"

_SLASH = ArnFormat.SLASH_RESOURCE_NAME
# Run a query in the workgroup and read its results (Athena's own side; the data side is a Lake policy).
ATHENA_QUERY_ACTIONS = [
    "athena:StartQueryExecution",
    "athena:GetQueryExecution",
    "athena:GetQueryResults",
    "athena:StopQueryExecution",
]


class TableJobs(Construct):
    """`jobs` by job name (`glue_jobs.build_tables.JOB_NAMES`), `workflow`, `workgroup`, `role`, and
    `grant_query` for another reader of the lake that queries in the same workgroup."""

    def __init__(self, scope: Construct, construct_id: str, *, lake: Lake, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.workgroup = self._workgroup(lake, key)
        script = assets.Asset(self, "Script", path=build_tables.__file__)
        # A folder asset is uploaded as one .zip of the folder: `--sql-location` names that object.
        sql = assets.Asset(self, "Sql", path=str(build_tables.SQL_DIR))

        self.log_key = kms.Key(
            self,
            "LogKey",
            enable_key_rotation=True,
            description="feedbackloop table jobs: CloudWatch logs and job bookmarks",
        )
        glue_logs = stack.format_arn(
            service="logs",
            resource="log-group",
            resource_name=GLUE_LOG_GROUPS,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        self.log_key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal(f"logs.{Aws.REGION}.amazonaws.com")],
                actions=["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"],
                resources=["*"],
                conditions={"ArnLike": {"kms:EncryptionContext:aws:logs:arn": glue_logs}},
            )
        )
        security = glue.CfnSecurityConfiguration(
            self,
            "SecurityConfiguration",
            name=self._physical_name(),
            encryption_configuration=glue.CfnSecurityConfiguration.EncryptionConfigurationProperty(
                cloud_watch_encryption=glue.CfnSecurityConfiguration.CloudWatchEncryptionProperty(
                    cloud_watch_encryption_mode="SSE-KMS", kms_key_arn=self.log_key.key_arn
                ),
                job_bookmarks_encryption=glue.CfnSecurityConfiguration.JobBookmarksEncryptionProperty(
                    job_bookmarks_encryption_mode="CSE-KMS", kms_key_arn=self.log_key.key_arn
                ),
                s3_encryptions=[
                    glue.CfnSecurityConfiguration.S3EncryptionProperty(
                        s3_encryption_mode="SSE-KMS", kms_key_arn=key.key_arn
                    )
                ],
            ),
        )

        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("glue.amazonaws.com"),
            description="feedbackloop table jobs: build the modelled lake tables with Athena",
        )
        self.role.add_managed_policy(lake.builder_policy)
        self._grant_job_resources(stack, script, sql, glue_logs)

        self.jobs: dict[str, glue.CfnJob] = {
            job.name: glue.CfnJob(
                self,
                f"{pascal_case(job.name)}Job",
                description=f"feedbackloop: build {', '.join(step.table for step in job.steps)}",
                role=self.role.role_arn,
                command=glue.CfnJob.JobCommandProperty(
                    name="pythonshell", python_version=PYTHON_VERSION, script_location=script.s3_object_url
                ),
                glue_version=GLUE_VERSION,
                max_capacity=MAX_CAPACITY,
                max_retries=0,  # a failed step keeps its bookmark: the next scheduled run redoes it
                timeout=int(JOB_TIMEOUT.to_minutes()),
                execution_property=glue.CfnJob.ExecutionPropertyProperty(max_concurrent_runs=1),
                security_configuration=security.ref,
                default_arguments={
                    "--job": job.name,
                    "--database": lake.database_name,
                    "--workgroup": self.workgroup.ref,
                    "--sql-location": sql.s3_object_url,
                    "--full": "false",
                    # the core's one half-life setting: the script cannot import the core
                    "--half-life-days": build_tables.half_life_argument(HALF_LIFE_DAYS),
                    "library-set": LIBRARY_SET,  # Glue's own key, without the dashes
                },
            )
            for job in build_tables.JOBS
        }
        self.workflow = self._workflow()

    def _workgroup(self, lake: Lake, key: kms.IKey) -> athena.CfnWorkGroup:
        results = lake.buckets[QUERY_RESULTS_BUCKET.key]
        workgroup = athena.CfnWorkGroup(
            self,
            "Workgroup",
            name=self._physical_name(),
            description="feedbackloop table jobs: results in the query-results bucket, encrypted, size-capped",
            state="ENABLED",
            recursive_delete_option=True,  # stateless: its query history must not block a teardown
            work_group_configuration=athena.CfnWorkGroup.WorkGroupConfigurationProperty(
                enforce_work_group_configuration=True,
                publish_cloud_watch_metrics_enabled=True,
                bytes_scanned_cutoff_per_query=ATHENA_BYTES_SCANNED_CUTOFF,
                engine_version=athena.CfnWorkGroup.EngineVersionProperty(selected_engine_version=ATHENA_ENGINE),
                result_configuration=athena.CfnWorkGroup.ResultConfigurationProperty(
                    output_location=f"s3://{results.bucket_name}/",
                    expected_bucket_owner=Aws.ACCOUNT_ID,
                    encryption_configuration=athena.CfnWorkGroup.EncryptionConfigurationProperty(
                        encryption_option="SSE_KMS", kms_key=key.key_arn
                    ),
                ),
            ),
        )
        return workgroup

    def _physical_name(self) -> str:
        """For the two resources CloudFormation cannot name itself (a security configuration, a workgroup:
        different namespaces), a name unique to this construct's path, like CDK's generated names."""
        return Names.unique_resource_name(self, max_length=128, separator="-")

    def grant_query(self, grantee: iam.IGrantable) -> None:
        """Run queries in the workgroup and read their results. The lake side (objects, catalog, the
        result location, the data key) is the Lake's `reader_policy` or `builder_policy`."""
        stack = Stack.of(grantee.grant_principal)
        iam.Grant.add_to_principal(
            grantee=grantee, actions=ATHENA_QUERY_ACTIONS, resource_arns=[self.workgroup_arn(stack)]
        )
        iam.Grant.add_to_principal(
            grantee=grantee, actions=["glue:GetDatabase"], resource_arns=[_default_database(stack)]
        )

    def workgroup_arn(self, stack: Stack) -> str:
        """The workgroup's ARN, formatted in `stack` (the region and account of the grantee's stack)."""
        return stack.format_arn(service="athena", resource="workgroup", resource_name=self.workgroup.ref)

    def _grant_job_resources(self, stack: Stack, script: assets.Asset, sql: assets.Asset, glue_logs: str) -> None:
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=[*ATHENA_QUERY_ACTIONS, "athena:GetWorkGroup"],
                resources=[self.workgroup_arn(stack)],
            )
        )
        self.role.add_to_policy(iam.PolicyStatement(actions=["glue:GetDatabase"], resources=[_default_database(stack)]))
        # The two asset objects only (Asset.grant_read would open the whole bootstrap bucket).
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[a.bucket.arn_for_objects(a.s3_object_key) for a in (script, sql)],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:AssociateKmsKey"],
                resources=[glue_logs],
            )
        )
        self.log_key.grant(self.role, "kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey")
        nag.acknowledge(
            self.role,
            nag.wildcard_resource(self, glue_logs),
            "Glue creates and names the log groups of a job run with a security configuration itself "
            "(they embed the configuration and role names); the wildcard is Glue's /aws-glue/ prefix in "
            "this account and region, as AWS documents for security configurations.",
        )

    def _workflow(self) -> glue.CfnWorkflow:
        """Scheduled: the jobs that wait for nothing; conditional: each other job, once every job of
        its `after` succeeded."""
        workflow = glue.CfnWorkflow(
            self,
            "Workflow",
            description="feedbackloop: rebuild the modelled lake tables, hourly",
            max_concurrent_runs=1,
        )
        starts = [job.name for job in build_tables.JOBS if not job.after]
        glue.CfnTrigger(
            self,
            "ScheduleTrigger",
            type="SCHEDULED",
            schedule=SCHEDULE,
            start_on_creation=True,
            workflow_name=workflow.ref,
            description="feedbackloop: start the table jobs that depend on no other",
            actions=[glue.CfnTrigger.ActionProperty(job_name=self.jobs[name].ref) for name in starts],
        )
        for job in build_tables.JOBS:
            if not job.after:
                continue
            glue.CfnTrigger(
                self,
                f"{pascal_case(job.name)}Trigger",
                type="CONDITIONAL",
                start_on_creation=True,
                workflow_name=workflow.ref,
                description=f"feedbackloop: {job.name} after {', '.join(job.after)}",
                predicate=glue.CfnTrigger.PredicateProperty(
                    logical="AND",
                    conditions=[
                        glue.CfnTrigger.ConditionProperty(
                            job_name=self.jobs[before].ref, logical_operator="EQUALS", state="SUCCEEDED"
                        )
                        for before in job.after
                    ],
                ),
                actions=[glue.CfnTrigger.ActionProperty(job_name=self.jobs[job.name].ref)],
            )
        return workflow


def _default_database(stack: Stack) -> str:
    # Athena looks up the "default" database beside the query's own when catalog access is scoped.
    return stack.format_arn(service="glue", resource="database", resource_name="default", arn_format=_SLASH)
