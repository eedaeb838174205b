"""Serving the attention model: load an artifact, answer for many users per micro-batch.

numpy + onnxruntime only. The worker keeps, per user, the event window (oldest first), the user's
total event count and, optionally, the :class:`KVCache` returned by the previous call. :meth:`
ModelRuntime.update` then runs the cheap one-event step for users whose cache matches (their context
grew by exactly the newest event, see :mod:`stream_app.model.features`) and the full window for the rest;
both give the same answer (tested to 1e-4).
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stream_app.model.artifact import (
    CATEGORIES_FILE,
    ITEMS_FILE,
    STEP_FILE,
    WINDOW_FILE,
    ArtifactError,
    check_artifact,
)
from stream_app.model.features import (
    FEATURE_NAMES,
    FeatureSpec,
    Vocab,
    WindowEvent,
    encode_windows,
    is_incremental,
)

log = logging.getLogger(__name__)
CUDA_LIBRARIES = ("libcudart.so.13", "libcublas.so.13", "libcudnn.so.9")

@dataclass
class KVCache:
    """A user's cached keys/values after ``n_events`` events whose newest was ``last_event``."""

    n_events: int
    last_event: WindowEvent
    kv: np.ndarray  # (layers, 2, heads, L, d_head) float32


@dataclass
class Predictions:
    """Answers for a batch of users, in input order."""

    top_items: list[list[tuple[str, float]]]  # best first, (item id, score)
    category_probs: np.ndarray  # (B, n_categories): next-category interest; column i = categories[i]
    churn: np.ndarray  # (B,) P(no event within the horizon H after the newest event)
    user_vectors: np.ndarray  # (B, d)
    caches: list[KVCache | None]  # pass back to the next update() of each user
    stepped: np.ndarray  # (B,) bool: answered by the one-event step (else the full window)


def cuda_usable() -> bool:
    """True only when onnxruntime has the CUDA provider *and* a GPU and the CUDA 13 libraries are
    present (onnxruntime-gpu logs errors when asked for CUDA without them)."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers() or not Path("/dev/nvidiactl").exists():
        return False
    try:
        for lib in CUDA_LIBRARIES:
            ctypes.CDLL(lib)
    except OSError:
        return False
    return True


class ModelRuntime:
    """An artifact loaded into ONNX Runtime sessions."""

    def __init__(self, art_dir: str | os.PathLike[str], window_length: int | None = None,
                 threads: int = 2, provider: str | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(art_dir)
        self.metadata: dict[str, Any] = check_artifact(self.path, window_length)
        self.version: str = str(self.metadata["model_version"])
        self.spec = FeatureSpec.from_dict(self.metadata["feature_spec"])
        self.items = Vocab.load(self.path / ITEMS_FILE)
        self.categories = Vocab.load(self.path / CATEGORIES_FILE)
        sizes = (self.metadata["n_items"], self.metadata["n_categories"])
        if (len(self.items), len(self.categories)) != sizes:
            raise ArtifactError(f"model artifact {self.path}: vocabulary files do not match metadata.json")
        provider = provider or ("CUDAExecutionProvider" if cuda_usable() else "CPUExecutionProvider")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        try:
            self.window = ort.InferenceSession(str(self.path / WINDOW_FILE), opts, providers=[provider])
            self.step_session = ort.InferenceSession(str(self.path / STEP_FILE), opts, providers=[provider])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ArtifactError(f"model artifact {self.path}: ONNX Runtime cannot load it: {exc}") from exc
        want = {*FEATURE_NAMES, "length"}
        got = {i.name for i in self.window.get_inputs()}
        if got != want:
            raise ArtifactError(f"model artifact {self.path}: window.onnx inputs {sorted(got)}, expected "
                                f"{sorted(want)}")
        self.provider = self.window.get_providers()[0]
        self.top_k_max = int(self.metadata["top_k"])  # items the graphs return per user
        log.info("model %s loaded from %s on %s", self.version, self.path, self.provider)

    def update(self, windows: Sequence[Sequence[WindowEvent]], n_events: Sequence[int] | None = None,
               caches: Sequence[KVCache | None] | None = None, k: int = 10, exclude_seen: bool = False,
               first_ts: Sequence[int] | None = None) -> Predictions:
        """Answers for each user after their newest event. ``windows[b]`` must hold at least the
        user's context (the last ``L`` events are always enough); ``n_events[b]`` is the user's total
        event count (defaults to the window length), ``first_ts[b]`` the time of the user's first event
        (defaults to the window's first event: right only while the window holds the whole history);
        ``caches[b]`` the cache from the previous call,
        used when it is exactly one event behind. ``exclude_seen`` drops items of the window from the
        top ``k``."""
        B = len(windows)
        counts = [len(w) for w in windows] if n_events is None else list(n_events)
        caches = list(caches) if caches is not None else [None] * B
        k = min(k, self.top_k_max)
        enc = encode_windows(windows, self.items, self.categories, self.spec, counts, first_ts)
        stepped = np.array([
            c is not None and c.n_events == n - 1 and is_incremental(n, self.spec.window_length)
            and len(w) >= 2 and tuple(w[-2]) == tuple(c.last_event)
            for w, n, c in zip(windows, counts, caches, strict=True)
        ], bool)
        d = int(self.metadata["model"]["d_model"])
        top_scores = np.zeros((B, self.top_k_max), np.float32)
        top_ids = np.zeros((B, self.top_k_max), np.int64)
        cats = np.zeros((B, len(self.categories)), np.float32)
        churn = np.zeros(B, np.float32)
        vectors = np.zeros((B, d), np.float32)
        kv_out: list[np.ndarray | None] = [None] * B
        full = np.nonzero(~stepped & (enc.lengths > 0))[0]
        if len(full):
            feeds = {n: enc.features[n][full] for n in FEATURE_NAMES} | {"length": enc.lengths[full]}
            ts, ti, cp, ch, uv, kv = self.window.run(None, feeds)
            top_scores[full], top_ids[full], cats[full], churn[full], vectors[full] = ts, ti, cp, ch, uv
            for j, bi in enumerate(full.tolist()):
                kv_out[bi] = kv[j]
        inc = np.nonzero(stepped)[0]
        if len(inc):
            last = enc.at_last()
            position = enc.lengths[inc] - 1
            past = np.stack([caches[i].kv for i in inc.tolist()])  # type: ignore[union-attr]
            feeds = {n: last[n][inc] for n in FEATURE_NAMES} | {
                "position": position, "past_kv": past, "context_item": enc.features["item"][inc],
                "context_category": enc.features["category"][inc]}
            ts, ti, cp, ch, uv, new = self.step_session.run(None, feeds)
            top_scores[inc], top_ids[inc], cats[inc], churn[inc], vectors[inc] = ts, ti, cp, ch, uv
            past[np.arange(len(inc)), :, :, :, position] = new
            for j, bi in enumerate(inc.tolist()):
                kv_out[bi] = past[j]
        top: list[list[tuple[str, float]]] = []
        for b in range(B):
            seen = {e[0] for e in windows[b]} if exclude_seen else set()
            row = [(self.items.ids[i], float(s)) for i, s in zip(top_ids[b], top_scores[b], strict=True)
                   if i > 1 and self.items.ids[i] not in seen]
            top.append(row[:k] if enc.lengths[b] > 0 else [])
        new_caches = [
            KVCache(counts[b], tuple(windows[b][-1]), kv_out[b]) if kv_out[b] is not None else None  # type: ignore[arg-type]
            for b in range(B)
        ]
        return Predictions(top, cats, churn, vectors, new_caches, stepped)

    def top_categories(self, probs: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` strongest category interests of one user's distribution."""
        order = np.argsort(-probs)
        return [(self.categories.ids[i], float(probs[i])) for i in order if i > 1][:k]
