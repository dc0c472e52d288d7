"""Stage: index."""
