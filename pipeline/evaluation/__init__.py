"""Benchmark evaluation: `benchmark` runs one (fit, replay, score, write), with `trace` (what a replay
records), `replay` (streaming or from the perception `cache`), `report` (typed figures, JSON, tables,
plot) and `ablation`; `metrics` holds the metric functions and `ped2` the dataset loader."""
