"""Model checkpoints: preparing (embedded, hub, local, random), loading, decoder-layer access
and steering hooks."""
