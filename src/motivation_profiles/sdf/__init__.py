"""Synthetic document fine-tuning: materials, documents, datasets and training."""
