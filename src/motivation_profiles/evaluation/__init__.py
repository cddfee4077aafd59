"""Alignment-faking evaluation: rollouts, outcome parsing and metrics."""
