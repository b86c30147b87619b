"""AWS CDK app of feedbackloop: constructs per capability (`cdk.components`), stacks that compose
them (`cdk.stacks`), and the app entry point (`python -m cdk.app`).

Every shared name (stream, buckets, tables, Glue catalog, settings, event schema) is imported from
`feedbackloop`; physical names are left to CloudFormation unless the service needs one.
"""
