"""Test helpers: worker processes, topic readers, expected states, tiny model artifacts."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
