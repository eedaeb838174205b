"""Offline tools around the stream app: dataset adapters."""
