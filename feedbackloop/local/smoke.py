"""`feedbackloop smoke --local`: the same steps against a running local stand-in (`feedbackloop local up`),
whose one API serves both the ingest and the serving routes; the curated lake read with DuckDB."""

from __future__ import annotations

from feedbackloop.local.environment import LocalEndpoints, use_endpoint
from feedbackloop.local.lake_reader import connect
from feedbackloop.smoke import Api, Target


class DuckDBLake:
    def __init__(self, aws_endpoint: str) -> None:
        self._endpoint = aws_endpoint

    def curated_rows(self, user_id: str) -> int:
        con = connect(self._endpoint)  # a fresh view each time: new objects appear between polls
        try:
            return con.execute("SELECT count(*) FROM feedback_events WHERE user_id = ?", [user_id]).fetchone()[0]
        finally:
            con.close()


def local_target(endpoints: LocalEndpoints) -> Target:
    use_endpoint(endpoints.aws_endpoint)
    api = Api(endpoints.api_url.rstrip("/"), endpoints.api_key)
    return Target(ingest=api, serving=api, lake=DuckDBLake(endpoints.aws_endpoint),
                  where=f"the local stand-in at {endpoints.api_url}")
