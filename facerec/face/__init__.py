"""Detection → alignment → embedding, composed from io and models; returns plain data."""
