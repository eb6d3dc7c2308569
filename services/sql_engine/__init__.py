"""SqlEngineService: datasets and read-only SQL on DuckDB over each session's immutable Parquet."""
