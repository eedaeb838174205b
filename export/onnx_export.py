"""ONNX export of the two computations (full window, one-event step) and the parity check against
PyTorch on real sequences."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from export.model import OUTPUT_NAMES, STEP_INPUTS, WINDOW_INPUTS, InterestModel, StepGraph, WindowGraph
from stream_app.model.artifact import STEP_FILE, WINDOW_FILE
from stream_app.model.features import FEATURE_NAMES, EncodedWindows

OPSET = 18


def kv_shape(model: InterestModel, batch: int) -> tuple[int, ...]:
    c = model.cfg
    return (batch, c.n_layers, 2, c.n_heads, c.window_length, c.d_head)


def top_k_of(model: InterestModel, wanted: int = 100) -> int:
    return min(wanted, model.cfg.n_items - 2)


def export_onnx(model: InterestModel, out_dir: Path, top_k: int) -> None:
    """Write window.onnx and step.onnx (dynamic batch axis) into ``out_dir``."""
    model.eval()
    warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export")
    warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)
    L = model.cfg.window_length
    B = 2
    ints = torch.ones((B, L), dtype=torch.int64)
    window_args = (*[ints] * len(FEATURE_NAMES), torch.tensor([L, 1]))
    torch.onnx.export(
        WindowGraph(model, top_k), window_args, str(out_dir / WINDOW_FILE),
        input_names=list(WINDOW_INPUTS), output_names=[*OUTPUT_NAMES, "kv"],
        dynamic_axes={n: {0: "batch"} for n in (*WINDOW_INPUTS, *OUTPUT_NAMES, "kv")},
        opset_version=OPSET, dynamo=False,
    )
    one = torch.ones(B, dtype=torch.int64)
    step_args = (*[one] * len(FEATURE_NAMES), torch.tensor([1, L - 1]), torch.zeros(kv_shape(model, B)),
                 ints, ints)
    torch.onnx.export(
        StepGraph(model, top_k), step_args, str(out_dir / STEP_FILE),
        input_names=list(STEP_INPUTS), output_names=[*OUTPUT_NAMES, "new_kv"],
        dynamic_axes={n: {0: "batch"} for n in (*STEP_INPUTS, *OUTPUT_NAMES, "new_kv")},
        opset_version=OPSET, dynamo=False,
    )


def ort_session(path: Path, threads: int = 2):  # noqa: ANN201 - onnxruntime is imported lazily
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@torch.no_grad()
def torch_window(model: InterestModel, enc: EncodedWindows, top_k: int) -> list[np.ndarray]:
    g = WindowGraph(model, top_k).eval()
    args = [torch.from_numpy(enc.features[n]) for n in FEATURE_NAMES] + [torch.from_numpy(enc.lengths)]
    return [t.numpy() for t in g(*args)]


@torch.no_grad()
def torch_step(model: InterestModel, feeds: dict[str, np.ndarray], top_k: int) -> list[np.ndarray]:
    g = StepGraph(model, top_k).eval()
    return [t.numpy() for t in g(*[torch.from_numpy(feeds[n]) for n in STEP_INPUTS])]


def max_abs_diff(a: list[np.ndarray], b: list[np.ndarray], skip_ids: bool = True) -> float:
    """Largest difference over the float outputs (top item ids are compared through their scores)."""
    return max(float(np.abs(x.astype(np.float64) - y.astype(np.float64)).max())
               for i, (x, y) in enumerate(zip(a, b, strict=True)) if not (skip_ids and i == 1))


def window_parity(model: InterestModel, out_dir: Path, enc: EncodedWindows, top_k: int) -> float:
    """Max |ONNX - torch| of the window graph on the given (real) windows."""
    sess = ort_session(out_dir / WINDOW_FILE)
    feeds = {n: enc.features[n] for n in FEATURE_NAMES} | {"length": enc.lengths}
    return max_abs_diff(sess.run(None, feeds), torch_window(model, enc, top_k))


def step_parity(model: InterestModel, out_dir: Path, before: EncodedWindows, after: EncodedWindows,
                top_k: int) -> dict[str, float]:
    """For users whose context grew by one event: |ONNX step from the cached keys/values - ONNX full
    window| and |ONNX step - torch step|."""
    win = ort_session(out_dir / WINDOW_FILE)
    step = ort_session(out_dir / STEP_FILE)

    def run_window(enc: EncodedWindows) -> list[np.ndarray]:
        return win.run(None, {n: enc.features[n] for n in FEATURE_NAMES} | {"length": enc.lengths})

    past = run_window(before)[-1]
    full = run_window(after)
    position = after.lengths - 1
    feeds = after.at_last() | {"position": position, "past_kv": past, "context_item": after.features["item"],
                               "context_category": after.features["category"]}
    onnx_step = step.run(None, feeds)
    torch_out = torch_step(model, feeds, top_k)
    full_kv_at_new = full[-1][np.arange(len(position)), :, :, :, position]
    return {
        "step_vs_window": max(max_abs_diff(onnx_step[:-1], full[:-1]),
                              float(np.abs(onnx_step[-1] - full_kv_at_new).max())),
        "step_onnx_vs_torch": max_abs_diff(onnx_step, torch_out),
    }
