"""Synthetic-document fine-tuning: universes, documents, datasets, LoRA training, belief checks."""
