"""Automatic adjustment (ADR 0009): trigger rules over engagement and CloudWatch metrics, drift detection
over the feedback stream, and the actions they take (a validated UI config deployment through AppConfig,
a retraining run, an alert), each decision recorded."""
