"""Compliance rates, gaps, intervention effects, S_A/S_B profiles, calibration and steering
summaries."""
