"""ONNX export of the two computations (full window, one-event step) and the parity check against
PyTorch on real sequences."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from export.model import (
    CHUNK_OUTPUTS,
    ITEMS_INPUTS,
    OUTPUT_NAMES,
    STEP_INPUTS,
    WINDOW_INPUTS,
    ChunkGraph,
    InterestModel,
    ItemsGraph,
    StepGraph,
    WindowGraph,
    chunk_inputs,
    chunk_new_kv,
)
from stream_app.model.artifact import CHUNK_FILE, EMBEDDINGS_FILE, ITEMS_GRAPH_FILE, STEP_FILE, WINDOW_FILE
from stream_app.model.features import FEATURE_NAMES, EncodedWindows

OPSET = 18


def kv_shape(model: InterestModel, batch: int) -> tuple[int, ...]:
    c = model.cfg
    return (batch, c.n_layers, 2, c.n_heads, c.window_length, c.d_head)


def top_k_of(model: InterestModel, wanted: int = 100) -> int:
    return min(wanted, model.cfg.n_items - 2)


def export_onnx(model: InterestModel, out_dir: Path, top_k: int) -> None:
    """Write window.onnx and step.onnx (dynamic batch axis; the offline parity references),
    chunk.onnx and items.onnx (what the worker serves) and the item embeddings (the ANN index's rows)
    into ``out_dir``."""
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
    export_serving(model, out_dir, top_k)


def export_serving(model: InterestModel, out_dir: Path, top_k: int) -> None:
    """chunk.onnx (dynamic batch, chunk, answer and cache lengths), items.onnx and item_embeddings.npy."""
    model.eval()
    c = model.cfg
    B, T, P = 3, 4, c.window_length
    ints = torch.ones((B, T), dtype=torch.int64)
    past = [torch.zeros(B, c.n_heads, P, c.d_head)] * (2 * c.n_layers)
    ctx = torch.ones((B, c.window_length), dtype=torch.int64)
    args = (*[ints] * len(FEATURE_NAMES), torch.tensor([0, 3, 7]), torch.tensor([[0, 3], [1, 2], [0, 0]]),
            ctx, *past)
    names = chunk_inputs(c.n_layers)
    new_kv = chunk_new_kv(c.n_layers)
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "chunk"} for n in FEATURE_NAMES}
    axes |= {"start": {0: "batch"}, "answer_at": {0: "batch", 1: "answers"},
             "context_category": {0: "batch"}}
    axes |= {n: {0: "batch", 2: "past"} for n in names if n.startswith("past_")}
    axes |= {n: {0: "batch", 1: "answers"} for n in CHUNK_OUTPUTS}
    axes |= {n: {0: "batch", 2: "chunk"} for n in new_kv}
    torch.onnx.export(ChunkGraph(model), args, str(out_dir / CHUNK_FILE), input_names=list(names),
                      output_names=[*CHUNK_OUTPUTS, *new_kv], dynamic_axes=axes, opset_version=OPSET,
                      dynamo=False)
    items_args = (torch.zeros(B, c.d_model), ctx, torch.tensor([1, 3, 5]))
    torch.onnx.export(ItemsGraph(model, top_k), items_args, str(out_dir / ITEMS_GRAPH_FILE),
                      input_names=list(ITEMS_INPUTS), output_names=["top_scores", "top_items"],
                      dynamic_axes={n: {0: "users"} for n in (*ITEMS_INPUTS, "top_scores", "top_items")},
                      opset_version=OPSET, dynamo=False)
    dynamic_top_k(out_dir / ITEMS_GRAPH_FILE)
    np.save(out_dir / EMBEDDINGS_FILE, model.item_emb.weight.detach().numpy().astype(np.float32))


def dynamic_top_k(path: Path) -> None:
    """Make every TopK of the graph take its K from a new input ``k`` (int64, shape (1,)): the worker
    asks for the few items it serves instead of the artifact's ``top_k`` (a smaller K is much cheaper
    in ONNX Runtime's TopK)."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    for node in graph.node:
        if node.op_type == "TopK":
            node.input[1] = "k"
    graph.input.append(onnx.helper.make_tensor_value_info("k", onnx.TensorProto.INT64, [1]))
    for out in graph.output:  # their second axis is now K
        out.type.tensor_type.shape.dim[1].dim_param = "k"
    del graph.value_info[:]
    used = {i for node in graph.node for i in node.input} | {o.name for o in graph.output}
    for node in [n for n in graph.node if n.op_type == "Constant" and not set(n.output) & used]:
        graph.node.remove(node)
    for init in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(init)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


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


def scaled_diff(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want|, divided by the reference's largest magnitude when that exceeds 1: absolute
    for probabilities, relative for scores, vectors and keys/values, whose float32 rounding grows
    with their size (item scores near 10 after a long MovieLens training differed by 1.4e-4 between
    the one-event step and the full window, while the user vectors agreed to 1.4e-6)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max()) / max(1.0, float(np.abs(want).max()))


def max_scaled_diff(a: list[np.ndarray], b: list[np.ndarray], skip_ids: bool = True) -> float:
    """Largest :func:`scaled_diff` over the float outputs (top item ids are compared through their
    scores)."""
    return max(scaled_diff(x, y) for i, (x, y) in enumerate(zip(a, b, strict=True))
               if not (skip_ids and i == 1))


def window_parity(model: InterestModel, out_dir: Path, enc: EncodedWindows, top_k: int) -> float:
    """Max |ONNX - torch| of the window graph on the given (real) windows."""
    sess = ort_session(out_dir / WINDOW_FILE)
    feeds = {n: enc.features[n] for n in FEATURE_NAMES} | {"length": enc.lengths}
    return max_scaled_diff(sess.run(None, feeds), torch_window(model, enc, top_k))


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
        "step_vs_window": max(max_scaled_diff(onnx_step[:-1], full[:-1]),
                              scaled_diff(onnx_step[-1], full_kv_at_new)),
        "step_onnx_vs_torch": max_scaled_diff(onnx_step, torch_out),
    }


def chunk_parity(model: InterestModel, out_dir: Path, enc: EncodedWindows, top_k: int,
                 chunk: int = 4) -> dict[str, float]:
    """Contexts ``enc`` cut into a cached part and a chunk of up to ``chunk`` newest events (rows of
    length <= chunk are computed from position 0, a full context): |ONNX chunk - ONNX full window| at
    every chunk position (category distribution, churn, user vector, keys/values, and the items graph's
    top-K scores on the chunk's user vectors), and |ONNX chunk - torch chunk|."""
    win = ort_session(out_dir / WINDOW_FILE)
    sess = ort_session(out_dir / CHUNK_FILE)
    items = ort_session(out_dir / ITEMS_GRAPH_FILE)
    keep = enc.lengths > 0
    feats = {n: v[keep] for n, v in enc.features.items()}
    lengths = enc.lengths[keep]
    B = len(lengths)
    rows = np.arange(B)
    start = np.where(lengths > chunk, lengths - chunk, 0)
    T = int((lengths - start).max())
    n_new = lengths - start
    offs = np.minimum(np.arange(T)[None, :], (n_new - 1)[:, None])  # padded answers repeat the last
    idx = np.minimum(start[:, None] + np.arange(T)[None, :], feats["item"].shape[1] - 1)
    full_kv = win.run(None, feats | {"length": lengths})[-1]  # (B, layers, 2, H, L, dk)
    c = model.cfg
    past = [np.ascontiguousarray(full_kv[:, i, j]) for i in range(c.n_layers) for j in range(2)]
    feeds = {n: np.take_along_axis(feats[n], idx, 1) for n in FEATURE_NAMES} | {
        "start": start, "answer_at": offs, "context_category": feats["category"]}
    feeds |= dict(zip([n for n in chunk_inputs(c.n_layers) if n.startswith("past_")], past, strict=True))
    out = sess.run(None, feeds)
    cats, churn, vec = out[:3]
    R = offs.shape[1]
    top = items.run(None, {"k": np.array([top_k]), "user_vector": vec.reshape(B * R, -1),
                           "context_item": np.repeat(feats["item"], R, axis=0),
                           "length": (start[:, None] + offs + 1).reshape(-1)})[0].reshape(B, R, -1)
    worst = 0.0
    for t in range(T):
        pos = np.minimum(start + t, lengths - 1)
        ref = win.run(None, feats | {"length": pos + 1})
        pairs = ((top[:, t], ref[0]), (cats[:, t], ref[2]), (churn[:, t], ref[3]), (vec[:, t], ref[4]))
        for got, want in pairs:
            worst = max(worst, scaled_diff(got, want))
        for i in range(2 * c.n_layers):
            new = out[3 + i][rows, :, np.minimum(t, n_new - 1)]
            worst = max(worst, scaled_diff(new, full_kv[rows, i // 2, i % 2, :, pos]))
    with torch.no_grad():
        t_out = ChunkGraph(model).eval()(*[torch.from_numpy(feeds[n]) for n in chunk_inputs(c.n_layers)])
    vs_torch = max(scaled_diff(a, b.numpy()) for a, b in zip(out, t_out, strict=True))
    return {"chunk_vs_window": worst, "chunk_onnx_vs_torch": vs_torch}
