"""Data pipeline: sources (hub or local files) -> prepare (token memmaps + meta.json) -> loader (batches)."""
