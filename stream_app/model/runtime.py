"""Serving the attention model: load an artifact, answer for many users per micro-batch.

numpy + onnxruntime only. The worker keeps, per user, the event window (oldest first), the user's
total event count and, optionally, the :class:`KVCache` handle returned by the previous call. :meth:`
ModelRuntime.update_chunks` appends each user's new events (one or several) to the cached keys/values
as one causal chunk when the handle matches (the context grew by exactly those events, see
:mod:`stream_app.model.features`) and recomputes the whole context for the rest, answering at every new
event; all give the same answer (tested to 1e-4). Keys/values live in one preallocated pool per runtime
(:class:`KVPool`), a handle is a slot in it: no per-user arrays are stacked or copied around.
Items are ranked exactly by ``items.onnx`` for catalogs up to ``ANN_THRESHOLD`` items, above it from the
user vectors by an ANN index over the item embeddings (:mod:`stream_app.model.ann`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stream_app.model.ann import ItemIndex
from stream_app.model.answers import Predictions, Row
from stream_app.model.artifact import (
    CATEGORIES_FILE,
    CHUNK_FILE,
    ITEMS_FILE,
    ITEMS_GRAPH_FILE,
    ArtifactError,
    check_artifact,
)
from stream_app.model.features import (
    FEATURE_NAMES,
    UNKNOWN,
    FeatureSpec,
    Vocab,
    WindowEvent,
    context_length,
    encode_appended,
    encode_windows,
)
from stream_app.model.kv_cache import KVCache, KVPool
from stream_app.model.providers import cuda_usable
from stream_app.model.ranking import ItemRanker, top_categories

log = logging.getLogger(__name__)

CHUNK_BUCKETS = (1, 4)  # cached rows are run in groups of chunk lengths 1, 2..4 and 5..L (bounded padding)
ANN_THRESHOLD = 50_000  # items above which the ranking uses the ANN index (see docs/model.md)


class ModelRuntime:
    """An artifact loaded into ONNX Runtime sessions."""

    def __init__(self, art_dir: str | os.PathLike[str], window_length: int | None = None,
                 threads: int = 2, provider: str | None = None, cache_users: int = 10_000,
                 ann_threshold: int = ANN_THRESHOLD, ann: ItemIndex | None = None) -> None:
        """``ann``: an index already built over this artifact's item embeddings (benchmarks, tests);
        else one is built at load time when the catalog has more than ``ann_threshold`` items."""
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
            self.chunk_session = ort.InferenceSession(str(self.path / CHUNK_FILE), opts, providers=[provider])
            self.items_session = ort.InferenceSession(
                str(self.path / ITEMS_GRAPH_FILE), _items_options(ort, opts, provider), providers=[provider])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ArtifactError(f"model artifact {self.path}: ONNX Runtime cannot load it: {exc}") from exc
        m = self.metadata["model"]
        self.n_layers, self.d_model = int(m["n_layers"]), int(m["d_model"])
        past = [f"past_{kind}_{i}" for i in range(self.n_layers) for kind in ("key", "value")]
        want = {*FEATURE_NAMES, "start", "answer_at", "context_category", *past}
        got = {i.name for i in self.chunk_session.get_inputs()}
        if got != want:
            raise ArtifactError(f"model artifact {self.path}: chunk.onnx inputs {sorted(got)}, expected "
                                f"{sorted(want)}")
        self._past_names = past
        self.provider = self.chunk_session.get_providers()[0]
        self.pool = KVPool(self.n_layers, int(m["n_heads"]), self.spec.window_length,
                           self.d_model // int(m["n_heads"]), max_slots=max(cache_users, 1))
        self.ranker = ItemRanker(self.items_session, self.items.ids, int(self.metadata["top_k"]),
                                 self.spec.window_length, self.path, ann, ann_threshold, threads)
        self.top_k_max = self.ranker.top_k_max
        self.ann = self.ranker.ann
        self.calls = 0  # chunk.onnx runs, for the tests and benchmarks
        self._past_buf: list[np.ndarray] = []
        log.info("model %s loaded from %s on %s (%s ranking)", self.version, self.path, self.provider,
                 "ANN" if self.ann is not None else "exact")

    def update(self, windows: Sequence[Sequence[WindowEvent]], n_events: Sequence[int] | None = None,
               caches: Sequence[KVCache | None] | None = None, k: int = 10, exclude_seen: bool = False,
               first_ts: Sequence[int] | None = None) -> Predictions:
        """Answers for each user after their newest event (one row per user). ``windows[b]`` must hold at
        least the user's context (the last ``L`` events are always enough); ``n_events[b]`` is the user's
        total event count (defaults to the window length), ``first_ts[b]`` the time of the user's first
        event (defaults to the window's first event: right only while the window holds the whole
        history); ``caches[b]`` the handle from the previous call, used when it is exactly one event
        behind. ``exclude_seen`` drops items of the window from the top ``k``."""
        return self.update_chunks(windows, n_events, caches, None, k, exclude_seen, first_ts)

    def update_chunks(self, windows: Sequence[Sequence[WindowEvent]], n_events: Sequence[int] | None = None,
                      caches: Sequence[KVCache | None] | None = None, answers: Sequence[int] | None = None,
                      k: int = 10, exclude_seen: bool = False, first_ts: Sequence[int] | None = None,
                      keep: Sequence[bool] | None = None,
                      answer_events: Sequence[Sequence[int]] | None = None) -> Predictions:
        """Like :meth:`update`, answering at each of the ``answers[b]`` newest events of user ``b`` (rows
        ordered by user, then event), or at the events numbered ``answer_events[b]`` (the user's event
        counts at them, ascending, the last one ``n_events[b]``): a sparse set, e.g. the events that
        triggered a recommendation. Every event since the cached one up to an answered event is appended
        to the cached context as one causal chunk, answered or not; a reset of the context among them
        starts a full recompute from there. The window must hold the context of every answered event
        (raises ``ValueError`` otherwise). ``keep[b]`` False: the caller will not use entry ``b``'s
        cache, so it takes no pool slot (default: all kept)."""
        B = len(windows)
        counts = [len(w) for w in windows] if n_events is None else list(n_events)
        handles: list[KVCache | None] = list(caches) if caches is not None else [None] * B
        if first_ts is None and any(n > len(w) for n, w in zip(counts, windows, strict=True)):
            raise ValueError("a user has more events than the window holds: pass first_ts (the time of "
                             "the user's first event)")
        firsts = [w[0][3] if w else 0 for w in windows] if first_ts is None else list(first_ts)
        if answer_events is None:
            wanted = [1] * B if answers is None else list(answers)
            answer_events = [range(max(n - m + 1, 1), n + 1) for n, m in zip(counts, wanted, strict=True)]
        L = self.spec.window_length
        rows = self._rows(windows, counts, handles, answer_events, firsts, L,
                          [True] * B if keep is None else keep)
        A = sum(len(r.answers) for r in rows)
        C = len(self.categories)
        cats = np.zeros((A, C), np.float32)
        churn = np.zeros(A, np.float32)
        vectors = np.zeros((A, self.d_model), np.float32)
        stepped = np.zeros(A, bool)
        user = np.zeros(A, np.int64)
        length = np.zeros(A, np.int64)
        ctx_items = np.zeros((A, L), np.int64)
        base = np.cumsum([0] + [len(r.answers) for r in rows])
        self._assign_slots(rows)
        cached = [i for i, r in enumerate(rows) if r.start > 0]
        full = [i for i, r in enumerate(rows) if r.start == 0]
        groups = [[i for i in cached if len(rows[i].context) - rows[i].start == 1],
                  [i for i in cached if 1 < len(rows[i].context) - rows[i].start <= CHUNK_BUCKETS[1]],
                  [i for i in cached if len(rows[i].context) - rows[i].start > CHUNK_BUCKETS[1]], full]
        for group in groups:
            if group:
                self._run([rows[i] for i in group], [int(base[i]) for i in group], cats, churn, vectors,
                          stepped, user, length, ctx_items)
        caches_out: list[KVCache | None] = [None] * B
        for r in rows:
            if r.keep and r.slot >= 0:
                caches_out[r.entry] = KVCache(r.n, tuple(r.context[-1]), r.slot,  # type: ignore[arg-type]
                                              int(self.pool.epoch[r.slot]), len(r.context))
        top = self.ranker.top_items(vectors, ctx_items, length, min(k, self.top_k_max), windows, user,
                                    exclude_seen)
        return Predictions(top, cats, churn, vectors, caches_out, stepped, user)

    def _rows(self, windows: Sequence[Sequence[WindowEvent]], counts: list[int],
              handles: list[KVCache | None], answer_events: Sequence[Sequence[int]], firsts: list[int],
              L: int, keep: Sequence[bool]) -> list[Row]:
        """Split each user's answered events into contexts (a reset starts a new one)."""
        rows: list[Row] = []
        for b, w in enumerate(windows):
            n = counts[b]
            if n <= 0 or not w:
                continue
            segments: list[list[int]] = []
            reset = -1
            for e in answer_events[b]:
                # the same context as the previous answered event (the same reset point) or a new one
                if segments and e - context_length(e, L) == reset:
                    segments[-1].append(e)
                else:
                    segments.append([e])
                reset = e - context_length(e, L)
            for si, seg in enumerate(segments):
                e1 = seg[-1]
                end = len(w) - (n - e1)
                c = context_length(e1, L)
                if end - c < 0:
                    raise ValueError(f"window of {len(w)} events does not hold the context of event {e1} "
                                     f"of a user with {n} events")
                context = w[end - c:end]
                start, h = 0, handles[b] if si == 0 else None
                d = e1 - h.n_events if h is not None else 0  # events since the cached one
                # (h.length == c - d: the cached context is this one's first positions, no reset since)
                if (h is not None and h.n_events < seg[0] and end - d - 1 >= 0
                        and tuple(w[end - d - 1]) == tuple(h.last_event)
                        and h.length == c - d and self.pool.valid(h)):
                    start = h.length
                else:
                    h = None
                row = Row(b, context, e1, firsts[b], start, [context_length(e, L) - 1 for e in seg], h,
                           si == len(segments) - 1 and keep[b])
                own = handles[b]
                if h is None and row.keep and own is not None and self.pool.owns(own):
                    row.slot = own.slot  # a full recompute reuses the user's slot
                rows.append(row)
        return rows

    def _assign_slots(self, rows: list[Row]) -> None:
        """Cached rows extend their slot in place; full rows that are kept get one (their user's old
        slot when it is still theirs, else a fresh or the least recently used one)."""
        pool = self.pool
        protect = {r.handle.slot for r in rows if r.handle is not None}
        for r in rows:
            if r.handle is not None:
                r.slot = r.handle.slot
        for r in rows:
            if r.handle is None and r.slot >= 0:
                if r.slot in protect:  # another row of this call extends or rewrites it
                    r.slot = -1
                else:
                    pool.renew(r.slot)
                    protect.add(r.slot)
        need = [r for r in rows if r.handle is None and r.keep and r.slot < 0]
        for r, s in zip(need, pool.allocate(len(need), protect), strict=True):
            r.slot = s
        pool.touch([r.slot for r in rows if r.slot >= 0])

    def _run(self, rows: list[Row], base: list[int], cats: np.ndarray, churn: np.ndarray,
             vectors: np.ndarray, stepped: np.ndarray, user: np.ndarray, length: np.ndarray,
             ctx_items: np.ndarray) -> None:
        """One chunk.onnx call for rows of one kind (all cached or all full)."""
        pool, L, G = self.pool, self.spec.window_length, len(rows)
        start = np.array([r.start for r in rows], np.int64)
        clen = np.array([len(r.context) for r in rows], np.int64)
        n_new = clen - start
        T = int(n_new.max())
        R = max(len(r.answers) for r in rows)
        answer_at = np.array([[a - r.start for a in r.answers]
                              + [r.answers[-1] - r.start] * (R - len(r.answers)) for r in rows], np.int64)
        slots = np.array([r.slot for r in rows], np.int64)
        if start.max() == 0:  # full contexts: encode every event, nothing cached to read
            enc = encode_windows([r.context for r in rows], self.items, self.categories, self.spec,
                                 [r.n for r in rows], [r.first_ts for r in rows])
            feeds: dict[str, np.ndarray] = {n: np.ascontiguousarray(enc.features[n][:, :T])
                                            for n in FEATURE_NAMES}
            ctx = {"item": enc.features["item"], "category": enc.features["category"],
                   "ts": np.zeros((G, L), np.int64)}
            for g, r in enumerate(rows):
                ctx["ts"][g, :len(r.context)] = [e[3] for e in r.context]
            past = [np.zeros((G, pool.heads, 0, pool.d_head), np.float32)] * len(self._past_names)
        else:  # cached contexts: only the new events are encoded, their predecessors come from the pool
            ctx = {k: v[slots] for k, v in pool.ctx.items()}
            new_ev = [e for r in rows for e in r.context[r.start:]]  # flat, row by row
            g_of = np.repeat(np.arange(G), n_new)
            t_of = np.arange(len(new_ev)) - np.repeat(np.cumsum(n_new) - n_new, n_new)
            lookup_i, lookup_c = self.items.index.get, self.categories.index.get
            new_items = np.zeros((G, T), np.int64)
            new_cats = np.zeros((G, T), np.int64)
            types = np.zeros((G, T), np.int64)
            new_items[g_of, t_of] = [lookup_i(e[0], UNKNOWN) for e in new_ev]
            new_cats[g_of, t_of] = [UNKNOWN if e[1] is None else lookup_c(e[1], UNKNOWN) for e in new_ev]
            types[g_of, t_of] = [e[2] for e in new_ev]
            ctx["ts"][g_of, start[g_of] + t_of] = [e[3] for e in new_ev]
            if types.min() < 0 or types.max() >= self.spec.n_types:
                raise ValueError(f"event type code outside 0..{self.spec.n_types - 1}")
            t = np.minimum(np.arange(T)[None, :], (n_new - 1)[:, None])
            pos = start[:, None] + t
            new_items = np.take_along_axis(new_items, t, 1)
            new_cats = np.take_along_axis(new_cats, t, 1)
            rows_idx = np.arange(G)[:, None]
            ctx["item"][rows_idx, pos] = new_items
            ctx["category"][rows_idx, pos] = new_cats
            feeds = encode_appended(ctx["ts"], start, n_new, types, np.array([r.n for r in rows], np.int64),
                                    np.array([r.first_ts for r in rows], np.int64), self.spec)
            feeds |= {"item": new_items, "category": new_cats}
            past = self._gather_past(slots)
        feeds |= {"start": start, "answer_at": answer_at, "context_category": ctx["category"]}
        feeds |= dict(zip(self._past_names, past, strict=True))
        out = self.chunk_session.run(None, feeds)
        self.calls += 1
        # keys/values of the new positions into the pool (rows whose cache is kept)
        keep = np.array([r.keep and r.slot >= 0 for r in rows])
        if keep.any():
            g_idx, t_idx = np.nonzero((np.arange(T)[None, :] < n_new[:, None]) & keep[:, None])
            p_idx = start[g_idx] + t_idx
            s_idx = slots[g_idx]
            for a, new_kv in zip(pool.kv, out[3:], strict=True):
                a[s_idx, :, p_idx] = new_kv[g_idx, :, t_idx]
            kept = np.nonzero(keep)[0]
            for key, arr in ctx.items():
                pool.ctx[key][slots[kept]] = arr[kept]
            pool.filled[slots[kept]] = clen[kept]
        # answers
        n_ans = np.array([len(r.answers) for r in rows])
        g_of = np.repeat(np.arange(G), n_ans)
        r_of = np.arange(len(g_of)) - np.repeat(np.cumsum(n_ans) - n_ans, n_ans)
        a_of = np.asarray(base)[g_of] + r_of
        cats[a_of] = out[0][g_of, r_of]
        churn[a_of] = out[1][g_of, r_of]
        vectors[a_of] = out[2][g_of, r_of]
        stepped[a_of] = start[g_of] > 0
        user[a_of] = np.array([r.entry for r in rows])[g_of]
        length[a_of] = start[g_of] + answer_at[g_of, r_of] + 1
        ctx_items[a_of] = ctx["item"][g_of]

    def _gather_past(self, slots: np.ndarray) -> list[np.ndarray]:
        """The rows' cached keys/values, one contiguous copy per layer and key/value into buffers kept
        between calls (fresh arrays would cost page faults on every call)."""
        G = len(slots)
        if not self._past_buf or self._past_buf[0].shape[0] < G:
            shape = (max(G, 64), self.pool.heads, self.pool.window_length, self.pool.d_head)
            self._past_buf = [np.empty(shape, np.float32) for _ in self.pool.kv]
        # mode="clip": with the default "raise" numpy buffers the output instead of writing it directly
        return [np.take(a, slots, axis=0, out=buf[:G], mode="clip")
                for a, buf in zip(self.pool.kv, self._past_buf, strict=True)]

    def top_categories(self, probs: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` strongest category interests of one user's distribution (PAD and UNKNOWN never)."""
        return top_categories(probs, self.categories.ids, k)


def _items_options(ort: Any, opts: Any, provider: str) -> Any:
    """The item ranking's session options: one thread on CPU. Its kernels (a GEMM over the catalog,
    TopK, a scatter) are too small per call for a second thread to pay for its synchronisation: 1
    thread ran it 1.8-1.9x faster than 2 at batch 64 and 256 (3,268 items, docs/model.md)."""
    if provider != "CPUExecutionProvider":
        return opts
    one = ort.SessionOptions()
    one.intra_op_num_threads = 1
    one.inter_op_num_threads = 1
    return one
