"""Hearsay's domain: audio, catalogue, teachers, student inference, index, search, projection, metrics."""
