"""The packaged demo model: trained on the workload the demo replays, small, shipped as package
data, and served by ONNX Runtime without torch."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

from stream_app.model.artifact import DEMO_ARTIFACT_DIR, REQUIRED_FILES, check_artifact
from stream_app.tools.demo import DEMO_WORKLOAD

ROOT = Path(__file__).resolve().parents[3]


def test_demo_artifact_is_servable_small_and_of_the_demo_workload() -> None:
    meta = check_artifact(DEMO_ARTIFACT_DIR, window_length=50)
    assert meta["model_version"].startswith("demo-")
    assert json.loads((DEMO_ARTIFACT_DIR / "workload.json").read_text()) == json.loads(
        json.dumps(DEMO_WORKLOAD.to_json()))  # tuples as lists, as written
    files = {p.name for p in DEMO_ARTIFACT_DIR.iterdir()}
    assert set(REQUIRED_FILES) <= files and "model.pt" not in files
    assert sum(p.stat().st_size for p in DEMO_ARTIFACT_DIR.iterdir()) < 3_000_000


def test_demo_artifact_is_package_data() -> None:
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "model/demo_artifact/*" in conf["tool"]["setuptools"]["package-data"]["stream_app"]


def test_demo_artifact_serves_without_torch() -> None:
    """A fresh interpreter where `import torch` fails loads the model and recommends."""
    code = """
import sys
sys.modules["torch"] = None  # any import of torch now raises ImportError
import itertools
from stream_app.core.events import TYPE_CODE
from stream_app.model.artifact import DEMO_ARTIFACT_DIR
from stream_app.model.runtime import ModelRuntime
from stream_app.tools.demo import DEMO_WORKLOAD
from stream_app.tools.generate import iter_synthetic_events
runtime = ModelRuntime(DEMO_ARTIFACT_DIR, window_length=50)
events = itertools.islice(iter_synthetic_events(DEMO_WORKLOAD), 3000)
window = [(e.item_id, e.category_id, TYPE_CODE[e.type], e.ts) for e in events if e.user_id == "u0"][:10]
answer = runtime.update([window], k=5)
print(runtime.version, len(window), len(answer.top_items[0]), "torch" in sys.modules and sys.modules["torch"])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    version, n_window, n_items, torch = out.stdout.split()
    assert version.startswith("demo-") and int(n_window) == 10 and int(n_items) == 5
    assert torch == "None"  # torch stayed blocked: nothing needed it


def test_demo_picks_the_packaged_model_unless_told_otherwise(tmp_path: Path) -> None:
    from stream_app.core.config import Settings
    from stream_app.tools.demo import demo_model_dir

    base = Settings.model_validate({})
    assert demo_model_dir(base, None, no_model=False) == DEMO_ARTIFACT_DIR
    assert demo_model_dir(base, None, no_model=True) is None  # --no-model: the baseline
    assert demo_model_dir(base, "ratings.dat", no_model=False) is None  # its items are unknown to it
    mine = base.model_copy(update={"model_dir": tmp_path})
    assert demo_model_dir(mine, None, no_model=False) == tmp_path
    assert demo_model_dir(mine, "ratings.dat", no_model=False) == tmp_path
