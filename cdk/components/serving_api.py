"""The serving API: recommendations, UI configuration, preferences and erasure for one user, API Gateway
(API key, usage plan, request validation) in front of one serving Lambda (Powertools' REST resolver routes
inside it).

A REST API of its own rather than more routes on the ingestion API: its callers are the product's
backends reading rankings, not feedback producers, so they get their own keys, usage plan and limits
(many small reads against a few large batches), and the serving stack deploys apart from ingestion.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigw
from constructs import Construct

from cdk import nag
from cdk.components.erasure_store import ErasureStore
from cdk.components.function import LayerSet, PythonFunction
from cdk.components.model_store import ModelStore
from cdk.components.online_store import OnlineStore
from cdk.components.rest_api import ApiLimits, add_keyed_usage_plan, add_validation_response, keyed_rest_api
from cdk.deployment import Deployment
from cdk.json_schema import add_model, draft04_from_pydantic
from cdk.project import ProjectLayout
from feedbackloop.serving_api import PreferencesRequest
from feedbackloop.settings import ServingSettings

USER_ID = "user_id"
USER_PATH = f"/users/{{{USER_ID}}}"


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # under USER_PATH, "" for the user itself
    query: tuple[str, ...] = ()  # optional query string parameters (documented; the function checks them)


RECOMMENDATIONS = Route("GET", "/recommendations", query=("k",))
CONFIG = Route("GET", "/config")
PREFERENCES = Route("PUT", "/preferences")
ERASE = Route("DELETE", "")
ERASURE_STATUS = Route("GET", "/erasure")
ROUTES = (RECOMMENDATIONS, CONFIG, PREFERENCES, ERASE, ERASURE_STATUS)

# A function of 1,769 MB or less has at most one vCPU: more BLAS threads only add wake-up latency to the
# tail (`feedbackloop bench serve` measures with one thread too).
SINGLE_BLAS_THREAD = {"OPENBLAS_NUM_THREADS": "1"}

# A warm request is two DynamoDB reads and a dot product over the item factors (tens of ms), so one
# function instance serves tens of requests per second; these limits keep a runaway caller well within
# the account's Lambda concurrency.
SERVING_LIMITS = ApiLimits(stage_rate=200, stage_burst=400, key_rate=100, key_burst=200, key_daily_quota=5_000_000)


class ServingApi(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        layout: ProjectLayout,
        model_store: ModelStore,
        online_store: OnlineStore,
        erasure_store: ErasureStore,
        limits: ApiLimits = SERVING_LIMITS,
    ) -> None:
        super().__init__(scope, construct_id)
        settings = ServingSettings(
            registry_table=model_store.registry.table_name,
            online_table=online_store.table.table_name,
            item_counters_table=online_store.item_table.table_name,
            erasure_table=erasure_store.table.table_name,
            erasure_queue_url=erasure_store.queue.queue_url,
            appconfig_application=Deployment.of(self).appconfig_application,
        )
        serving = PythonFunction(
            self,
            "Serving",
            layout=layout,
            handler="lambdas.serving.handler.lambda_handler",
            description="the serving API: recommendations (the model plus recent feedback), UI configuration, "
            "preferences, erasure",
            environment={**settings.to_env(), **SINGLE_BLAS_THREAD},
            # numpy over the item factors: memory also buys the CPU that scores them
            memory_size=1024,
            # a cold start loads the published model from S3 before its first answer
            timeout=Duration.seconds(10),
            # numpy, no pandas or pyarrow: a 54 MiB layer
            layers=LayerSet.NUMPY,
        )
        serving.role.add_managed_policy(model_store.server_policy)
        serving.role.add_managed_policy(online_store.server_policy)
        serving.role.add_managed_policy(erasure_store.requester_policy)
        self.function = serving.function

        # API Gateway logging needs the account-level CloudWatch role: set already, or by the ingestion API
        # on request (cdk/deployment.py), in which case the serving stack deploys after it.
        self.api = keyed_rest_api(
            self,
            description="feedbackloop serving: recommendations, UI configuration, preferences, erasure",
            limits=limits,
            cloud_watch_role=False,
        )
        preferences_model = add_model(
            self.api,
            "PreferencesRequest",
            draft04_from_pydantic(PreferencesRequest.model_json_schema()),
            description="PUT /users/{user_id}/preferences body, from feedbackloop.serving_api.PreferencesRequest",
        )
        # APIG2 wants a validator that checks both; a method without a model has no body to check.
        validator = self.api.add_request_validator(
            "RequestValidator", validate_request_body=True, validate_request_parameters=True
        )
        add_validation_response(
            self.api,
            "BadRequestBody",
            apigw.ResponseType.BAD_REQUEST_BODY,
            "the body does not match the PreferencesRequest schema",
        )
        add_validation_response(
            self.api,
            "BadRequestParameters",
            apigw.ResponseType.BAD_REQUEST_PARAMETERS,
            "a required request parameter is missing",
        )

        integration = apigw.LambdaIntegration(self.function)
        user = self.api.root.add_resource("users").add_resource(f"{{{USER_ID}}}")
        for route in ROUTES:
            resource = user.add_resource(route.path.strip("/")) if route.path else user
            resource.add_method(
                route.method,
                integration,
                api_key_required=True,
                request_validator=validator,
                # API Gateway checks presence; the function checks the id's pattern and length
                request_parameters={
                    f"method.request.path.{USER_ID}": True,
                    **{f"method.request.querystring.{name}": False for name in route.query},
                },
                request_models={"application/json": preferences_model} if route is PREFERENCES else None,
            )

        self.api_key = add_keyed_usage_plan(
            self.api,
            "Clients",
            "ClientKey",
            description="serving clients (the product's backends)",
            key_description="default serving client",
            limits=limits,
        )
        self._acknowledge_findings()

    def _acknowledge_findings(self) -> None:
        nag.acknowledge(
            self.api,
            "APIG3",
            "No WAF web ACL yet: the callers are backend services holding API keys, not browsers; abuse is "
            "bounded by per-key throttling and quotas, stage throttling and request validation.",
        )
        nag.acknowledge(
            self.api,
            "APIG4",
            "Callers are the product's backend services, identified by an API key bound to a usage plan; "
            "they call on behalf of users they have already authenticated, so no end-user token reaches here.",
        )
        nag.acknowledge(
            self.api,
            "COG4",
            "No Cognito user pool: the callers are machine clients identified by API key (see APIG4).",
        )
