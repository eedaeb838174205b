"""The model unit tests' tiny artifact (untrained, over real Taobao vocabularies, L = 8), shared with
the integration tests that serve or retrain a model: built once per session."""

from tests.unit.model.conftest import L, artifact, data  # noqa: F401 - fixtures, registered by import
