"""The InsightX gRPC services, one package each, each runnable as `python -m services.<name>`."""
