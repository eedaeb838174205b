"""Writing the versioned model artifact (its layout and format: :mod:`stream_app.model.artifact`)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import torch

from export.model import InterestModel, ModelConfig
from export.onnx_export import top_k_of
from stream_app.model.artifact import (
    CATEGORIES_FILE,
    ITEMS_FILE,
    SCHEMA_VERSION,
    WEIGHTS_FILE,
    write_metadata,
)
from stream_app.model.features import FeatureSpec, Vocab


def save_model(model: InterestModel, out_dir: Path) -> None:
    torch.save({"config": model.cfg.to_dict(), "state": model.state_dict()}, out_dir / WEIGHTS_FILE)


def load_model(art_dir: Path) -> InterestModel:
    blob = torch.load(art_dir / WEIGHTS_FILE, weights_only=True)
    model = InterestModel(ModelConfig(**blob["config"]))
    model.load_state_dict(blob["state"])
    return model.eval()


def write_artifact(out_dir: Path, model: InterestModel, items: Vocab, categories: Vocab, spec: FeatureSpec,
                   extra: dict[str, object]) -> dict[str, object]:
    """Weights, vocabularies and metadata (the ONNX files are written by export_onnx)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model(model, out_dir)
    items.save(out_dir / ITEMS_FILE)
    categories.save(out_dir / CATEGORIES_FILE)
    created = datetime.now(UTC)
    c = model.cfg
    meta: dict[str, object] = {
        "schema_version": SCHEMA_VERSION,
        "model_version": f"{out_dir.name}-{created:%Y%m%dT%H%M%SZ}",
        "created_at": created.isoformat(),
        "feature_spec": spec.to_dict(),
        "window_length": spec.window_length,
        "n_items": len(items),
        "n_categories": len(categories),
        "top_k": top_k_of(model),
        "model": c.to_dict(),
        "kv_shape": ["batch", c.n_layers, 2, c.n_heads, c.window_length, c.d_head],
        **extra,
    }
    write_metadata(out_dir, meta)
    return meta
