"""Implementations of the ports: AWS (boto3, awswrangler) and in-memory."""
