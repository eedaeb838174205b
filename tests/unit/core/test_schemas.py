"""schemas/ is the public contract: every topic has a schema, every example validates, and the
validator rejects what the contract excludes."""

from __future__ import annotations

import fastjsonschema
import pytest

from stream_app.core.config import Settings
from stream_app.core.schemas import SCHEMA_TOPICS, example, load_schema, schemas_dir, validator


def test_every_topic_has_a_schema_and_an_example() -> None:
    s = Settings()
    default_topics = set(s.all_topics())  # inputs (events, erasures) and outputs
    assert default_topics == set(SCHEMA_TOPICS)
    files = {p.name.removesuffix(".schema.json") for p in schemas_dir().glob("*.schema.json")}
    assert files == set(SCHEMA_TOPICS)


@pytest.mark.parametrize("topic", SCHEMA_TOPICS)
def test_example_validates(topic: str) -> None:
    assert load_schema(topic)["title"] == topic
    validator(topic)(example(topic))


@pytest.mark.parametrize("change", [
    {"ts": "1511544070000"}, {"ts": -1}, {"user_id": ""}, {"item_id": 5}, {"category_id": 3},
    {"event_id": None},
])
def test_input_schema_rejects(change: dict) -> None:
    with pytest.raises(fastjsonschema.JsonSchemaException):
        validator("clicks")({**example("clicks"), **change})


def test_missing_fields_rejected_and_null_category_allowed() -> None:
    event = example("browses")
    validator("browses")({**event, "category_id": None})
    for field in ("event_id", "user_id", "item_id", "ts"):
        with pytest.raises(fastjsonschema.JsonSchemaException):
            validator("browses")({k: v for k, v in event.items() if k != field})
