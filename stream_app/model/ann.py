"""Approximate top-k items by inner product with the user vector, for large catalogs.

The item head's generator scores an item by ``h · e_i`` (the output weights are tied to the item
embeddings), so retrieval is a maximum-inner-product search over the artifact's item embeddings
(``item_embeddings.npy``), indexed once at load time. Backends (HNSW graphs, inner product):
``hnswlib`` (default: in ``benchmarks/bench_ann.py`` with the same parameters it searched 2-3x faster
than ``usearch`` at recall@10 >= 0.95, like ``faiss`` at a fraction of its install size; see
docs/model.md), ``usearch`` and ``faiss``; ``exact`` is the numpy reference (``argpartition`` over all
scores). Scores returned are the exact inner products of the items found.

An HNSW graph's recall at a given search breadth (``ef_search``) falls as the catalog grows and as the
queries stray from where the items lie (at 1M items, ef 160: 0.94 for queries near item clusters,
0.66 for an untrained model's user vectors). So :meth:`ItemIndex.calibrate` measures recall@k on sample
queries against the exact top-k and widens the breadth until it reaches a target: the artifact's
``user_vectors.npy`` (user vectors at held-out points, written by the export) or, without it, sums of
three item rows (:func:`pseudo_queries`).
"""

from __future__ import annotations

import numpy as np

BACKENDS = ("hnswlib", "faiss", "usearch", "exact")


class ItemIndex:
    """An index over ``embeddings`` (N, d) float32 rows; ``search`` returns row indices."""

    def __init__(self, embeddings: np.ndarray, backend: str = "hnswlib", m: int = 32,
                 ef_construction: int = 96, ef_search: int = 160, threads: int = 2) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"ANN backend {backend!r}: one of {', '.join(BACKENDS)}")
        self.backend = backend
        self.emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        n, d = self.emb.shape
        self.size, self.dim = n, d
        self.ef_search = ef_search
        self._index: object
        if backend == "hnswlib":
            import hnswlib

            idx = hnswlib.Index(space="ip", dim=d)
            idx.init_index(max_elements=n, ef_construction=ef_construction, M=m)
            idx.set_num_threads(threads)
            idx.add_items(self.emb, np.arange(n))
            idx.set_ef(ef_search)
            self._index = idx
        elif backend == "faiss":
            import faiss

            faiss.omp_set_num_threads(threads)
            fidx = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
            fidx.hnsw.efConstruction = ef_construction
            fidx.add(self.emb)
            fidx.hnsw.efSearch = ef_search
            self._index = fidx
        elif backend == "usearch":
            from usearch.index import Index

            uidx = Index(ndim=d, metric="ip", dtype="f32", connectivity=m, expansion_add=ef_construction,
                         expansion_search=ef_search)
            uidx.add(np.arange(n), self.emb, threads=threads)
            self._index = uidx
        self.threads = threads
        self.recall: float | None = None  # recall@k measured by calibrate

    def calibrate(self, queries: np.ndarray, k: int = 10, target: float = 0.95, max_ef: int = 4096
                  ) -> float:
        """Sets ``ef_search`` to about the smallest breadth (from its current value up to ``max_ef``)
        whose recall@k on ``queries`` against the exact top-k reaches ``target``: doubling until it
        does, then three bisection steps back (a doubling can overshoot by up to 2x in cost).
        Returns the recall at the breadth kept."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, self.size)
        rows = max(1, 2**27 // (4 * self.size))  # queries per exact pass: a score block of 128 MB at most
        exact = np.vstack([exact_top_k(self.emb, q[i:i + rows], k)[1] for i in range(0, len(q), rows)])

        def recall_with(ef: int) -> float:
            self.ef_search = ef
            return recall_at(self.search(q, k)[1], exact)

        lo, hi = 0, self.ef_search
        reached = recall_with(hi)
        while reached < target and hi < max_ef and self.backend != "exact":
            lo, hi = hi, min(2 * hi, max_ef)
            reached = recall_with(hi)
        for _ in range(3 if lo and reached >= target else 0):
            mid = (lo + hi) // 2
            if (r := recall_with(mid)) >= target:
                hi, reached = mid, r
            else:
                lo = mid
        self.ef_search, self.recall = hi, reached
        return reached

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, indices), each (Q, k), best first."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, self.size)
        if self.backend == "exact":
            return exact_top_k(self.emb, q, k)
        if self.backend == "hnswlib":
            self._index.set_ef(max(self.ef_search, k))  # type: ignore[attr-defined]
            labels, dist = self._index.knn_query(q, k=k, num_threads=self.threads)  # type: ignore[attr-defined]
            ids = labels.astype(np.int64)
        elif self.backend == "faiss":
            self._index.hnsw.efSearch = max(self.ef_search, k)  # type: ignore[attr-defined]
            _, ids = self._index.search(q, k)  # type: ignore[attr-defined]
        else:
            self._index.expansion_search = max(self.ef_search, k)  # type: ignore[attr-defined]
            res = self._index.search(q, k, threads=self.threads)  # type: ignore[attr-defined]
            ids = np.asarray(res.keys, dtype=np.int64).reshape(len(q), k)
        ids = np.maximum(ids, 0)
        scores = np.einsum("qd,qkd->qk", q, self.emb[ids])  # exact inner products of the found rows
        order = np.argsort(-scores, axis=1, kind="stable")
        return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


def recall_at(found: np.ndarray, exact: np.ndarray) -> float:
    """Recall@k of ``found`` (Q, k) row indices against the ``exact`` (Q, k) top-k."""
    pairs = zip(found.tolist(), exact.tolist(), strict=True)
    return sum(len(set(a) & set(b)) for a, b in pairs) / exact.size


def pseudo_queries(emb: np.ndarray, n: int = 256, seed: int = 0) -> np.ndarray:
    """Calibration queries when no user vectors were exported: sums of three random item rows (a
    user between interests; single item rows are too easy: at 1M items they reached recall 0.95 at
    a breadth that gave queries between clusters 0.94)."""
    rng = np.random.default_rng(seed)
    return emb[rng.integers(0, len(emb), (n, 3))].sum(1).astype(np.float32)


def exact_top_k(emb: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` rows of ``emb`` by inner product with each query: (scores, indices)."""
    scores = queries @ emb.T
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < emb.shape[0] else np.tile(
        np.arange(emb.shape[0]), (len(queries), 1))
    top = np.take_along_axis(scores, part, 1)
    order = np.argsort(-top, axis=1, kind="stable")
    return np.take_along_axis(top, order, 1), np.take_along_axis(part, order, 1)
