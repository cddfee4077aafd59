"""Prompt interventions: claims, conditions and the prompt plan."""
