"""Item retrieval for large catalogs: ANN index vs exact scoring, 10k -> 1M items.

    .venv/bin/python -m benchmarks.bench_ann [--sizes 10000,100000,1000000]
        [--backends hnswlib,faiss,usearch] [--runtime-sizes 10000,100000,1000000] [--seconds 2]

Part 1 (index sweep): synthetic clustered item embeddings (d=64, one cluster per ~100 items, as item
embeddings group by category) and user vectors near a few clusters; per backend and catalog size:
build time, search time per query at batch 256 for k=10, recall@10 against the exact top-10 by inner
product (numpy); first at the default search breadth (``ef_search`` 160), then after
``ItemIndex.calibrate`` on item-based queries (``pseudo_queries``, not the measured ones) for
``--recall-target``.

Part 2 (through the runtime API): a default-size model (d=64, 2 layers, L=50) whose item embeddings
are the synthetic ones is exported at each size; one-event incremental updates per second at batch
256 through ``ModelRuntime.update`` with the exact ``items.onnx`` ranking and with the ANN ranking
(hnswlib by default, built once per size, calibrated on the user vectors of 256 other windows and handed
to the runtime), and the ANN ranking's recall@10 against the exact inner-product top-10 of the same user
vectors.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from stream_app.model.ann import recall_at

D = 64
BATCH = 256


def synthetic(n: int, d: int = D, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(items (n, d), queries (BATCH, d)) float32: clustered items, queries mixing 3 clusters."""
    rng = np.random.default_rng(seed)
    n_clusters = max(n // 100, 10)
    centers = rng.normal(size=(n_clusters, d)).astype(np.float32)
    items = centers[rng.integers(0, n_clusters, n)] + 0.5 * rng.normal(size=(n, d)).astype(np.float32)
    mix = centers[rng.integers(0, n_clusters, (BATCH, 3))].sum(1)
    queries = mix + 0.5 * rng.normal(size=(BATCH, d)).astype(np.float32)
    return items * 0.1, queries.astype(np.float32)


def _per_call(fn, seconds: float) -> float:  # noqa: ANN001
    fn()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or n < 3:
        fn()
        n += 1
    return elapsed / n


def index_sweep(sizes: list[int], backends: list[str], seconds: float, threads: int, target: float) -> None:
    from stream_app.model.ann import ItemIndex, exact_top_k, pseudo_queries

    print("| items | backend | build s | ef_search | search µs/query (batch 256, k=10) | recall@10 |")
    print("|---|---|---|---|---|---|")
    for n in sizes:
        items, queries = synthetic(n)
        _, exact = exact_top_k(items, queries, 10)
        t = _per_call(lambda i=items, q=queries: exact_top_k(i, q, 10), seconds)
        print(f"| {n:,} | exact (numpy) | - | - | {1e6 * t / BATCH:,.1f} | 1.000 |", flush=True)
        for backend in backends:
            start = time.perf_counter()
            index = ItemIndex(items, backend=backend, threads=threads)
            build = time.perf_counter() - start
            for calibrated in (False, True):
                if calibrated:  # on item-based queries, as the runtime does without exported user vectors
                    index.calibrate(pseudo_queries(items), target=target)
                _, found = index.search(queries, 10)
                t = _per_call(lambda ix=index, q=queries: ix.search(q, 10), seconds)
                name = f"{backend}{' calibrated' if calibrated else ''}"
                print(f"| {n:,} | {name} | {build:.1f} | {index.ef_search} | {1e6 * t / BATCH:,.1f} | "
                      f"{recall_at(found, exact):.3f} |", flush=True)
            del index


def build_artifact(out: Path, n_items: int, items: np.ndarray) -> Path:
    import torch

    from export.artifact import write_artifact
    from export.model import InterestModel, ModelConfig
    from export.onnx_export import export_serving, top_k_of
    from stream_app.model.features import FeatureSpec, Vocab

    torch.manual_seed(0)
    spec = FeatureSpec(window_length=50)
    model = InterestModel(ModelConfig.for_spec(spec, n_items + 2, 20)).eval()
    with torch.no_grad():
        model.item_emb.weight[2:] = torch.from_numpy(items)
    write_artifact(out, model, Vocab([f"i{i}" for i in range(n_items)]), Vocab([f"c{i}" for i in range(18)]),
                   spec, {"churn_horizon_ms": 0})
    export_serving(model, out, top_k_of(model))
    return out


def runtime_sweep(sizes: list[int], seconds: float, threads: int, backend: str, exact_max: int,
                  target: float) -> None:
    from stream_app.model.ann import ItemIndex, exact_top_k
    from stream_app.model.runtime import ModelRuntime

    print(f"| items | exact items.onnx: updates/s | ANN ({backend}): updates/s | index build s "
          "| ef_search (calibration recall@10) | ANN recall@10 |")
    print("|---|---|---|---|---|---|")
    L, n = 50, 75
    hist = [[(f"i{(u * 7919 + j * 104729) % 10_000}", f"c{j % 18}", j % 3, 1_000 * j) for j in range(n)]
            for u in range(BATCH)]
    # other users' windows: their user vectors are the calibration queries (held out from the measured ones)
    held_out = [[(f"i{(u * 6151 + j * 3571) % 10_000}", f"c{j % 18}", j % 3, 1_000 * j) for j in range(L)]
                for u in range(BATCH)]
    first = [0] * BATCH
    windows = [h[n - L:n] for h in hist]
    for size in sizes:
        items, _ = synthetic(size)
        start = time.perf_counter()
        index = ItemIndex(items, backend=backend, threads=threads)
        build = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as tmp:
            art = build_artifact(Path(tmp) / "m", size, items)
            rates, recall = [], 0.0
            for ann in (None, index):
                if ann is None and size > exact_max:
                    rates.append(float("nan"))
                    continue
                rt = ModelRuntime(art, threads=threads, ann_threshold=size + 1, ann=ann)
                if ann is not None:
                    ann.calibrate(rt.update(held_out).user_vectors, target=target)
                prev = rt.update([h[n - 1 - L:n - 1] for h in hist], [n - 1] * BATCH, first_ts=first)
                slots = np.array([c.slot for c in prev.caches])
                c1 = prev.caches[0].length

                def step(rt: ModelRuntime = rt, prev: object = prev, slots: np.ndarray = slots,
                         c1: int = c1) -> None:
                    rt.pool.filled[slots] = c1
                    out = rt.update(windows, [n] * BATCH, prev.caches,  # type: ignore[attr-defined]
                                    first_ts=first)
                    assert out.stepped.all()

                rates.append(BATCH / _per_call(step, seconds))
                if ann is not None:
                    rt.pool.filled[slots] = c1
                    out = rt.update(windows, [n] * BATCH, prev.caches, first_ts=first)
                    _, exact = exact_top_k(items, out.user_vectors, 10)
                    found = np.array([[int(i[1:]) for i, _ in row] for row in out.top_items])
                    recall = recall_at(found, exact)
                del rt
        print(f"| {size:,} | {rates[0]:,.0f} | {rates[1]:,.0f} | {build:.1f} | {index.ef_search} "
              f"({index.recall:.3f}) | {recall:.3f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--backends", default="hnswlib,faiss,usearch")
    ap.add_argument("--runtime-sizes", default="10000,100000,1000000")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runtime-backend", default="hnswlib")
    ap.add_argument("--recall-target", type=float, default=0.95, help="of ItemIndex.calibrate")
    ap.add_argument("--exact-max", type=int, default=100_000,
                    help="largest catalog timed with the exact items.onnx (its cost grows with the catalog)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if sizes:
        index_sweep(sizes, [b for b in args.backends.split(",") if b], args.seconds, args.threads,
                    args.recall_target)
    runtime_sizes = [int(s) for s in args.runtime_sizes.split(",") if s]
    if runtime_sizes:
        runtime_sweep(runtime_sizes, args.seconds, args.threads, args.runtime_backend, args.exact_max,
                      args.recall_target)


if __name__ == "__main__":
    main()
