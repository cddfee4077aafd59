"""Thin rule entry points (one module per workflow/rules/*.smk file); the top layer."""
