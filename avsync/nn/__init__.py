"""Shared torch building blocks of the learned backends (imported only when torch is wanted)."""
