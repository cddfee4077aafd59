"""Paper figures, one module per stage, drawn from metrics tables only."""
