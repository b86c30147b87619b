"""Where models live: the registry table (`resources.REGISTRY_TABLE`: a `current` pointer and one record
per published version) and who may touch the models bucket (`resources.MODELS_BUCKET`, a zone bucket of
the Lake) and the registry.

As with the Lake's writer policies, the permissions are managed policies that live here, beside the
data they open, and the retraining workflow in the stateless stack attaches them by ARN:
- `trainer_policy`, for the SageMaker training job: read the tables of `TRAINING_CHANNELS` and the
  published versions (the `CURRENT_MODEL_CHANNEL`), write candidates (`resources.CANDIDATES_PREFIX`),
  encrypt its volume and output with the data key;
- `evaluator_policy`: read candidates and the registry;
- `publisher_policy`: read candidates, write published versions (`resources.PUBLISHED_PREFIX`) and the
  registry;
- `server_policy`, for the serving function: read the registry and published versions, nothing else.
"""

from __future__ import annotations

from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from cdk import nag
from cdk.components.key_value import key_value_table
from cdk.components.lake import Lake
from feedbackloop.lake import TRAINING_CHANNELS
from feedbackloop.resources import CANDIDATES_PREFIX, MODELS_BUCKET, PUBLISHED_PREFIX, REGISTRY_TABLE

# The training job's input channels (sagemaker/train.py reads SM_CHANNEL_FEEDBACK and SM_CHANNEL_USERS)
# and the lake table each one is.

# Object writes of a (possibly multipart) upload or copy, and nothing that deletes or retags.
_S3_WRITE = ["s3:PutObject", "s3:AbortMultipartUpload"]


class ModelStore(Construct):
    """`registry` (the table) and the four managed policies of the module docstring."""

    def __init__(self, scope: Construct, construct_id: str, *, lake: Lake, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.registry: dynamodb.Table = key_value_table(self, REGISTRY_TABLE, key)
        models: s3.IBucket = lake.buckets[MODELS_BUCKET.key]
        candidates = models.arn_for_objects(f"{CANDIDATES_PREFIX}*")
        published = models.arn_for_objects(f"{PUBLISHED_PREFIX}*")

        self.trainer_policy = self._trainer_policy(lake, key, candidates)
        self.evaluator_policy = iam.ManagedPolicy(
            self,
            "EvaluatorPolicy",
            description="feedbackloop: evaluate a candidate model (read candidates and the registry)",
            statements=[
                iam.PolicyStatement(actions=["s3:GetObject"], resources=[candidates]),
                iam.PolicyStatement(actions=["kms:Decrypt"], resources=[key.key_arn]),
                iam.PolicyStatement(actions=["dynamodb:GetItem"], resources=[self.registry.table_arn]),
            ],
        )
        self.publisher_policy = iam.ManagedPolicy(
            self,
            "PublisherPolicy",
            description="feedbackloop: publish a candidate model (copy it to its version, move the registry pointer)",
            statements=[
                iam.PolicyStatement(actions=["s3:GetObject"], resources=[candidates]),
                iam.PolicyStatement(actions=_S3_WRITE, resources=[published]),
                # SSE-KMS: Decrypt reads the candidate (and completes a multipart copy), GenerateDataKey writes
                iam.PolicyStatement(actions=["kms:Decrypt", "kms:GenerateDataKey"], resources=[key.key_arn]),
                # one TransactWriteItems of two Puts (the version record, the conditional pointer)
                iam.PolicyStatement(actions=["dynamodb:PutItem"], resources=[self.registry.table_arn]),
            ],
        )
        self.server_policy = iam.ManagedPolicy(
            self,
            "ServerPolicy",
            description="feedbackloop: serve the published model (read the registry pointer and published versions)",
            statements=[
                iam.PolicyStatement(actions=["dynamodb:GetItem"], resources=[self.registry.table_arn]),
                iam.PolicyStatement(actions=["s3:GetObject"], resources=[published]),
                # the registry table and the model objects are encrypted with the data key
                iam.PolicyStatement(actions=["kms:Decrypt"], resources=[key.key_arn]),
            ],
        )
        nag.acknowledge(
            self.server_policy,
            nag.wildcard_resource(self, published),
            "Object-level S3 actions need an object ARN; the wildcard is the published prefix of the models "
            "bucket (read only), where each published version has a folder of its own.",
        )
        nag.acknowledge(
            self.evaluator_policy,
            nag.wildcard_resource(self, candidates),
            "Object-level S3 actions need an object ARN; the wildcard is the candidates prefix of the models "
            "bucket, where training jobs write the archives the evaluator reads.",
        )
        nag.acknowledge_all(
            self.publisher_policy,
            [nag.wildcard_resource(self, candidates), nag.wildcard_resource(self, published)],
            "Object-level S3 actions need an object ARN; the wildcards are the models bucket's candidates "
            "prefix (read only) and its published prefix, where each version gets a folder of its own.",
        )

    def _trainer_policy(self, lake: Lake, key: kms.IKey, candidates: str) -> iam.ManagedPolicy:
        # (bucket key, prefix) the channels read: the tables, and the published versions (the `current`
        # channel is one published model's archive)
        sources = [(t.bucket_key, t.prefix) for t in TRAINING_CHANNELS.values()]
        sources.append((MODELS_BUCKET.key, PUBLISHED_PREFIX))
        readable = [lake.buckets[bucket_key].arn_for_objects(f"{prefix}*") for bucket_key, prefix in sources]
        policy = iam.ManagedPolicy(
            self,
            "TrainerPolicy",
            description="feedbackloop: train a candidate model (read its tables and the published model, write "
            "candidates, data key)",
            statements=[
                iam.PolicyStatement(actions=["s3:GetObject"], resources=readable),
                # File mode lists each channel's prefix before it downloads it; the condition keeps the
                # listing to those prefixes.
                *(
                    iam.PolicyStatement(
                        actions=["s3:ListBucket"],
                        resources=[lake.buckets[bucket_key].bucket_arn],
                        conditions={"StringLike": {"s3:prefix": [f"{prefix}*" for b, prefix in sources
                                                                 if b == bucket_key]}},
                    )
                    for bucket_key in sorted({b for b, _ in sources})
                ),
                iam.PolicyStatement(actions=_S3_WRITE, resources=[candidates]),
                # read the SSE-KMS tables and published model, write the model archive encrypted with the
                # key (OutputDataConfig)
                iam.PolicyStatement(
                    actions=["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"], resources=[key.key_arn]
                ),
                # the training volume's encryption (ResourceConfig.VolumeKmsKeyId): SageMaker creates a
                # grant for the instance's EBS volume
                iam.PolicyStatement(
                    actions=["kms:CreateGrant"],
                    resources=[key.key_arn],
                    conditions={"Bool": {"kms:GrantIsForAWSResource": "true"}},
                ),
            ],
        )
        nag.acknowledge_all(
            policy,
            [nag.wildcard_resource(self, arn) for arn in (*readable, candidates)],
            "Object-level S3 actions need an object ARN; the wildcards are the prefixes of the two lake tables "
            "and the published prefix of the models bucket the training job reads (read only), and the "
            "candidates prefix it writes.",
        )
        return policy
