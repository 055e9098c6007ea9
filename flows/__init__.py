"""Flows: the Prefect flow(s), their configuration model and the command line."""
