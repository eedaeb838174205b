"""Ranking the catalog for a user vector: exactly by ``items.onnx`` for catalogs up to a threshold,
above it by an ANN index over the item embeddings (:mod:`stream_app.model.ann`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stream_app.model.ann import ItemIndex, pseudo_queries
from stream_app.model.artifact import EMBEDDINGS_FILE, USER_VECTORS_FILE, ArtifactError
from stream_app.model.features import WindowEvent

log = logging.getLogger(__name__)
ANN_RECALL_TARGET = 0.95  # recall@10 an ANN index built here is calibrated for (ItemIndex.calibrate)


class ItemRanker:
    def __init__(self, items_session: Any, item_ids: list[str], top_k_max: int, window_length: int,
                 art_dir: Path, ann: ItemIndex | None, ann_threshold: int, threads: int) -> None:
        self.items_session, self.window_length = items_session, window_length
        self._item_ids = np.array(item_ids, dtype=object)
        self.top_k_max = top_k_max  # items the exact graph returns per answer
        self.ann = ann
        if self.ann is None and len(item_ids) - 2 > ann_threshold:
            self.ann = ItemIndex(np.load(art_dir / EMBEDDINGS_FILE)[2:], threads=threads)
            sample = art_dir / USER_VECTORS_FILE
            queries = np.load(sample) if sample.exists() else pseudo_queries(self.ann.emb)
            recall = self.ann.calibrate(queries, target=ANN_RECALL_TARGET)
            log.info("ANN index over %d items: ef_search %d, recall@10 %.3f on %d %s", self.ann.size,
                     self.ann.ef_search, recall, len(queries),
                     "exported user vectors" if sample.exists() else "item-based queries")
        if self.ann is not None:
            if self.ann.size != len(item_ids) - 2:
                raise ArtifactError(f"model artifact {art_dir}: the ANN index has {self.ann.size} items, "
                                    f"the vocabulary {len(item_ids) - 2}")
            self.top_k_max = max(self.top_k_max, 100)

    def top_items(self, vectors: np.ndarray, ctx_items: np.ndarray, length: np.ndarray, k: int,
                  windows: Sequence[Sequence[WindowEvent]], user: np.ndarray, exclude_seen: bool
                  ) -> list[list[tuple[str, float]]]:
        """The best ``k`` (item id, score) per answer row; ``exclude_seen`` drops the user's window."""
        A = len(vectors)
        if A == 0:
            return []
        if self.ann is not None:
            scores, ids = self.ann.search(vectors, self.top_k_max if exclude_seen else k)
            ids = ids + 2
        else:
            want = min(self.top_k_max, k + self.window_length if exclude_seen else k)
            feeds = {"k": np.array([want], np.int64), "user_vector": vectors, "context_item": ctx_items,
                     "length": length}
            scores, ids = self.items_session.run(None, feeds)
        if not exclude_seen:
            names = self._item_ids[ids[:, :k]].tolist()
            values = scores[:, :k].tolist()
            return [list(zip(n, v, strict=True)) for n, v in zip(names, values, strict=True)]
        top: list[list[tuple[str, float]]] = []
        names_all = self._item_ids[ids].tolist()
        values_all = scores.tolist()
        for a in range(A):
            seen = {e[0] for e in windows[int(user[a])]}
            row = [(i, s) for i, s in zip(names_all[a], values_all[a], strict=True) if i not in seen]
            top.append(row[:k])
        return top


def top_categories(probs: np.ndarray, category_ids: list[str], k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` strongest categories of one distribution (PAD and UNKNOWN, ids 0 and 1, never)."""
    k = min(k, len(probs) - 2)
    if k <= 0:
        return []
    real = probs[2:]
    part = np.argpartition(-real, k - 1)[:k] if k < len(real) else np.arange(len(real))
    best = part[np.argsort(-real[part], kind="stable")]
    return [(category_ids[i + 2], float(real[i])) for i in best]
