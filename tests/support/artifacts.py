"""A tiny untrained model artifact over real vocabularies: enough to test serving mechanics."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import torch

from export.artifact import write_artifact
from export.model import InterestModel, ModelConfig
from export.onnx_export import export_onnx, top_k_of
from export.prepare import PreparedData


def tiny_artifact(data: PreparedData, out: Path) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig.for_spec(data.spec, len(data.items), len(data.categories), d_model=16, n_heads=2,
                               n_layers=2, d_ff=32, dropout=0.0)
    model = InterestModel(cfg).eval()
    write_artifact(out, model, data.items, data.categories, data.spec, {"churn_horizon_ms": 86_400_000})
    export_onnx(model, out, top_k_of(model))
    return out


def publish(artifact: Path, versions: Path, name: str, *, servable: bool = True) -> Path:
    """Copy ``artifact`` into the directory of versions as ``name`` the way the docs say: written
    under a hidden name, then renamed. Unservable: a schema version this code does not serve."""
    hidden = versions / f".{name}.tmp"
    shutil.copytree(artifact, hidden)
    meta = orjson.loads((hidden / "metadata.json").read_bytes())
    meta["model_version"] = f"reload-{name}"
    if not servable:
        meta["schema_version"] = 99
    (hidden / "metadata.json").write_bytes(orjson.dumps(meta))
    return hidden.rename(versions / name)
