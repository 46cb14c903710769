"""Benchmarks: the papers' protocols on any folder of synced clips (see protocol.py)."""
