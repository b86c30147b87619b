"""A deployed feedbackloop, found from the caller's credentials: the stacks' outputs (CloudFormation),
the API keys' values (API Gateway) and the curated lake through Athena, for `feedbackloop smoke`."""

from __future__ import annotations

import boto3
from botocore.exceptions import ClientError

from feedbackloop.adapters.control import AthenaQueryRunner
from feedbackloop.lake import CURATED_EVENTS
from feedbackloop.resources import INGEST_STACK, SERVING_STACK, TABLES_STACK, glue_database, stack_name
from feedbackloop.smoke import Api, SmokeFailure, Target


def stack_outputs(session: boto3.Session, name: str) -> dict[str, str]:
    try:
        stacks = session.client("cloudformation").describe_stacks(StackName=name)["Stacks"]
    except ClientError as failure:
        raise SmokeFailure(f"stack {name} not found ({failure.response['Error']['Message']}): deploy it with "
                           "`npx cdk deploy --all` (with `-c stage=...` when it has one), or check the region "
                           "and credentials") from None
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


def api_key_value(session: boto3.Session, key_id: str) -> str:
    return session.client("apigateway").get_api_key(apiKey=key_id, includeValue=True)["value"]


class AthenaLake:
    def __init__(self, session: boto3.Session, database: str, workgroup: str) -> None:
        self._athena = AthenaQueryRunner(session, database, workgroup)

    def curated_rows(self, user_id: str) -> int:
        if not user_id.replace("-", "").isalnum():  # our own test ids only: nothing to escape
            raise ValueError(f"unexpected user id {user_id!r}")
        rows = self._athena.rows(f"SELECT count(*) FROM {CURATED_EVENTS.name} WHERE user_id = '{user_id}' "
                                 "AND event_date >= cast(current_date - interval '1' day AS varchar)")
        return int(rows[0][0]) if rows else 0


def aws_target(session: boto3.Session, stage: str | None) -> Target:
    ingest = stack_outputs(session, stack_name(INGEST_STACK, stage))
    serving = stack_outputs(session, stack_name(SERVING_STACK, stage))
    tables = stack_outputs(session, stack_name(TABLES_STACK, stage))
    events_url = ingest["ApiUrl"]  # .../v1/events
    return Target(
        ingest=Api(events_url.rsplit("/events", 1)[0], api_key_value(session, ingest["ApiKeyId"])),
        serving=Api(serving["ApiUrl"].rstrip("/"), api_key_value(session, serving["ApiKeyId"])),
        lake=AthenaLake(session, glue_database(stage), tables["WorkgroupName"]),
        where=f"the AWS deployment{f' of stage {stage}' if stage else ''} in {session.region_name}",
    )
