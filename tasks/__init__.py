"""Tasks: one module per stage; plain functions first, a thin Prefect task last."""
