"""Hot reload of the attention model from a directory of versions (:mod:`stream_app.model.versions`).

Every ``TRACKER_MODEL_POLL_S`` the worker looks for a version newer than the one it serves, loads it
in a thread (the event loop goes on fetching and applying events meanwhile) and swaps it in between
two micro-batches: a batch's recommendations all come from one model (the swap happens on the event
loop, and a batch asks its recommender once), the new model starts with no cached keys/values, and
its version is in every output from then on and in ``tracker_model_info``. A version that cannot be
served is refused with one log line (and ``tracker_model_reloads_total{outcome="refused"}``); the
model in service goes on.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from stream_app.core.config import Settings
from stream_app.model.artifact import ArtifactError
from stream_app.model.versions import ModelVersions, is_single_artifact
from stream_app.service import metrics

if TYPE_CHECKING:
    from stream_app.model.serving import ModelRecommender

log = logging.getLogger(__name__)


def load_model(path: Path, settings: Settings) -> ModelRecommender:
    from stream_app.model.runtime import ModelRuntime
    from stream_app.model.serving import ModelRecommender

    runtime = ModelRuntime(path, window_length=settings.window_length, threads=settings.model_threads)
    return ModelRecommender(runtime, settings.recommendations_k, settings.model_cache_users)


class ModelReloader:
    """The model in service and where the next one comes from (``versions`` is None for a single
    artifact: nothing to reload)."""

    def __init__(self, settings: Settings):
        assert settings.model_dir is not None
        self.settings = settings
        root = settings.model_dir
        self.versions = None if is_single_artifact(root) else ModelVersions(root)
        self.path: Path | None = None

    def first(self) -> ModelRecommender:
        """The model to start with: the artifact, or the newest servable version (ArtifactError, with
        a clear message, when there is none)."""
        root: Path = self.settings.model_dir  # type: ignore[assignment]
        if self.versions is None:
            single = load_model(root, self.settings)
            self._serving(single, root)
            return single
        for path in self.versions.candidates(None):
            model = self._load(path)
            if model is not None:
                self._serving(model, path)
                return model
        raise ArtifactError(f"no servable model version in {self.settings.model_dir} (a directory of "
                            f"versions: one artifact per subdirectory; see the log for each refusal)")

    async def newer(self) -> ModelRecommender | None:
        """A newer servable version, loaded off the event loop; None when there is none."""
        if self.versions is None:
            return None
        for path in self.versions.candidates(self.path):
            model = await asyncio.to_thread(self._load, path)
            if model is not None:
                self._serving(model, path)
                return model
        return None

    def _load(self, path: Path) -> ModelRecommender | None:
        """The version at ``path`` loaded, or None (refused, logged) if it cannot be served."""
        try:
            return load_model(path, self.settings)
        except Exception as exc:  # noqa: BLE001 - any unservable artifact is refused, never fatal here
            assert self.versions is not None
            self.versions.refuse(path)
            metrics.MODEL_RELOADS.labels("refused").inc()
            log.error("model version %s refused, %s: %s", path.name,
                      f"still serving {self.path.name}" if self.path else "trying an older one",
                      exc if isinstance(exc, ArtifactError) else repr(exc))
            return None

    def _serving(self, model: ModelRecommender, path: Path) -> None:
        previous = self.path
        self.path = path
        if previous is not None:
            metrics.MODEL_RELOADS.labels("loaded").inc()
        log.info("model version %s (%s) %s", model.version, path,
                 f"replaces {previous.name}" if previous else "in service")
