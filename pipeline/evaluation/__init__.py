"""Benchmark evaluation: metric functions (`metrics`) and dataset loaders (`ped2`)."""
