"""Benchmark protocols (LFW) that turn a data set on disk into scored pairs and reportable numbers."""
