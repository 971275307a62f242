"""Files: streaming table readers/writers (CSV, Parquet, stdin/stdout), work units, part directories and run locks."""
