"""Activation steering: names, plan, contrastive pairs, activation caches, vectors, analyses."""
