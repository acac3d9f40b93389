"""Turning similarity scores into accept/reject decisions: verification metrics, thresholds and their plots."""
