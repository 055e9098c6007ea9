"""Arrow schemas of every table the project writes, one module per stage (the Parquet contract)."""
