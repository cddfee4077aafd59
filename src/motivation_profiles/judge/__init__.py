"""Judges: Direction A/B scratchpad scoring and raw-AdvBench compliance."""
