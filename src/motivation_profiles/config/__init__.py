"""Config loading and validation: the JSON schema, then each stage's own checks."""
