"""The JSON Schemas in ``schemas/`` are the public contract; validators are compiled from them."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastjsonschema

SCHEMA_TOPICS = (
    "clicks", "browses", "purchases", "recommendations", "churn-warnings", "dead-letters",
    "erasures", "erasure-confirmations",
)


def schemas_dir() -> Path:
    """``$TRACKER_SCHEMAS_DIR`` or the repository's ``schemas/`` folder."""
    env = os.environ.get("TRACKER_SCHEMAS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "schemas"


@functools.cache
def load_schema(topic: str) -> dict[str, Any]:
    return json.loads((schemas_dir() / f"{topic}.schema.json").read_text())


@functools.cache
def validator(topic: str) -> Callable[[Any], Any]:
    """A compiled validator for ``topic``'s values; raises ``fastjsonschema.JsonSchemaException``."""
    return fastjsonschema.compile(load_schema(topic))


def example(topic: str) -> dict[str, Any]:
    return json.loads((schemas_dir() / "examples" / f"{topic}.json").read_text())
