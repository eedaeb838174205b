"""The model artifact directory: its file names, format version and the check that this code can
serve it. The one definition both sides use: ``export/`` writes artifacts, the runtime loads them.

``<dir>/chunk.onnx`` (any number of new events per user appended to the cached keys/values; a full
context is the chunk from position 0), ``items.onnx`` (exact item top-K from the user vectors) and
``item_embeddings.npy`` (the item table, rows of an ANN index for large catalogs) are served, with
``user_vectors.npy`` (optional: user vectors of held-out points, the ANN index's calibration queries);
``window.onnx`` and ``step.onnx`` are the offline parity references; ``items.json``, ``categories.json``
(vocabularies: the id of index ``i + 2``; 0 and 1 are PAD and UNKNOWN), ``model.pt`` (PyTorch
weights and config, for re-export and evaluation; not needed to serve) and ``metadata.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stream_app.core.events import EVENT_TYPES
from stream_app.model.features import FeatureSpec

SCHEMA_VERSION = 2  # 2: chunk.onnx, items.onnx and item_embeddings.npy (served); 1 had window/step only
METADATA_FILE = "metadata.json"
ITEMS_FILE = "items.json"
CATEGORIES_FILE = "categories.json"
WINDOW_FILE = "window.onnx"
STEP_FILE = "step.onnx"
CHUNK_FILE = "chunk.onnx"
ITEMS_GRAPH_FILE = "items.onnx"
EMBEDDINGS_FILE = "item_embeddings.npy"
USER_VECTORS_FILE = "user_vectors.npy"  # optional: sample user vectors the ANN index calibrates on
WEIGHTS_FILE = "model.pt"
# The demo model shipped as package data (``interest-tracker build-demo-model`` writes it): trained on
# the synthetic workload ``interest-tracker demo`` replays; served files only, no torch needed.
DEMO_ARTIFACT_DIR = Path(__file__).resolve().parent / "demo_artifact"
REQUIRED_FILES = (METADATA_FILE, ITEMS_FILE, CATEGORIES_FILE, CHUNK_FILE, ITEMS_GRAPH_FILE, EMBEDDINGS_FILE)


class ArtifactError(RuntimeError):
    """The artifact cannot be served by this code; the message says why."""


def check_artifact(art_dir: Path, window_length: int | None = None) -> dict[str, Any]:
    """Metadata of a servable artifact, or :class:`ArtifactError` saying what is wrong."""
    if not art_dir.is_dir():
        raise ArtifactError(f"model artifact {art_dir} is not a directory")
    if not (art_dir / METADATA_FILE).exists():
        raise ArtifactError(f"model artifact {art_dir} lacks {METADATA_FILE}")
    try:
        meta = json.loads((art_dir / METADATA_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{art_dir / METADATA_FILE} is not valid JSON: {exc}") from exc
    version = meta.get("schema_version")
    if version == 1:
        raise ArtifactError(f"model artifact {art_dir} has schema version 1 (window/step graphs only); this "
                            f"tracker serves version {SCHEMA_VERSION} (chunk.onnx, items.onnx, "
                            f"item_embeddings.npy): re-export it with `interest-tracker export {art_dir}`")
    if version != SCHEMA_VERSION:
        raise ArtifactError(f"model artifact {art_dir} has schema version {version}; this tracker serves "
                            f"version {SCHEMA_VERSION} only (re-export the model with this version)")
    missing = [f for f in REQUIRED_FILES if not (art_dir / f).exists()]
    if missing:
        raise ArtifactError(f"model artifact {art_dir} lacks {', '.join(missing)}")
    want = FeatureSpec(window_length=int(meta.get("window_length", 0)) or 1).to_dict()
    got = meta.get("feature_spec")
    if got != want:
        raise ArtifactError(f"model artifact {art_dir} was trained with feature spec {got}; this code "
                            f"computes {want}")
    if meta["feature_spec"]["n_types"] != len(EVENT_TYPES):
        raise ArtifactError(f"model artifact {art_dir} knows {meta['feature_spec']['n_types']} event types, "
                            f"the tracker {len(EVENT_TYPES)}")
    if window_length is not None and meta["window_length"] != window_length:
        raise ArtifactError(f"model artifact {art_dir} has window length {meta['window_length']}, the "
                            f"worker keeps {window_length} events (set TRACKER_WINDOW_LENGTH to match)")
    return meta


def write_metadata(out_dir: Path, meta: dict[str, object]) -> None:
    (out_dir / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=float))


def read_metadata(art_dir: Path) -> dict[str, object]:
    return json.loads((art_dir / METADATA_FILE).read_text())
