"""M5Product tooling: raw release layout, synthetic sample, `datasets` builder, Parquet converter."""
