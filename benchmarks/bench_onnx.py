"""ONNX Runtime CPU throughput of the attention model: full window vs one-event incremental step,
inside ONNX Runtime and through the runtime API (ModelRuntime.update / update_chunks).

    .venv/bin/python -m benchmarks.bench_onnx [--artifact DIR] [--threads 2] [--seconds 2]
        [--only graphs|runtime]

Without --artifact, a model of the default size (d=64, 2 layers, 2 heads, L=50, 3,268 items, the
MovieLens vocabulary size) is exported with untrained weights: the cost does not depend on the
weights. Full windows are full contexts (L events, the worst case); the step attends to L-1 cached
positions. Each batch size runs window and step alternately, so both see the same machine load.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

BATCHES = (1, 64, 256)


def build_default_artifact(out: Path, n_items: int = 3268, n_categories: int = 20) -> Path:
    import torch

    from export.artifact import write_artifact
    from export.model import InterestModel, ModelConfig
    from export.onnx_export import export_onnx, top_k_of
    from stream_app.model.features import FeatureSpec, Vocab

    torch.manual_seed(0)
    spec = FeatureSpec(window_length=50)
    model = InterestModel(ModelConfig.for_spec(spec, n_items, n_categories)).eval()
    items = Vocab([f"i{i}" for i in range(n_items - 2)])
    cats = Vocab([f"c{i}" for i in range(n_categories - 2)])
    write_artifact(out, model, items, cats, spec, {"churn_horizon_ms": 0})
    export_onnx(model, out, top_k_of(model))
    return out


def _rate(fn, seconds: float) -> float:  # noqa: ANN001
    """Calls per second of ``fn`` over about ``seconds`` (after one warm-up call)."""
    fn()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or n < 3:
        fn()
        n += 1
    return n / elapsed


def _session(path: Path, threads: int):  # noqa: ANN202 - onnxruntime is imported lazily
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def graph_table(rt, art: Path, args: argparse.Namespace) -> None:  # noqa: ANN001
    """Inside ONNX Runtime: window.onnx vs step.onnx vs chunk.onnx with one new event (+ items.onnx)."""
    window, step = _session(art / "window.onnx", args.threads), _session(art / "step.onnx", args.threads)
    L = rt.spec.window_length
    rng = np.random.default_rng(0)
    print("| batch | full window: windows/s | one-event step: updates/s | step speed-up "
          "| chunk.onnx + items.onnx (k=20), 1 event: updates/s | speed-up |")
    print("|---|---|---|---|---|---|")
    for B in BATCHES:
        feats = {"item": rng.integers(2, len(rt.items), (B, L)),
                 "category": rng.integers(2, len(rt.categories), (B, L)),
                 "type": rng.integers(1, 4, (B, L)), "gap": rng.integers(1, 32, (B, L)),
                 "hour": rng.integers(1, 25, (B, L)), "count": rng.integers(1, 24, (B, L)),
                 "age": rng.integers(1, 128, (B, L)), "pace": rng.integers(1, 80, (B, L))}
        win_feeds = feats | {"length": np.full(B, L, np.int64)}
        kv = window.run(["kv"], win_feeds)[0]
        step_feeds = {k: v[:, -1] for k, v in feats.items()} | {
            "position": np.full(B, L - 1, np.int64), "past_kv": kv, "context_item": feats["item"],
            "context_category": feats["category"]}
        chunk_feeds = {k: v[:, -1:] for k, v in feats.items()} | {
            "start": np.full(B, L - 1, np.int64), "answer_at": np.zeros((B, 1), np.int64),
            "context_category": feats["category"]}
        chunk_feeds |= {f"past_{kind}_{i}": np.ascontiguousarray(kv[:, i, j])
                        for i in range(rt.n_layers) for j, kind in enumerate(("key", "value"))}
        items_feeds = {"k": np.array([20]), "context_item": feats["item"], "length": np.full(B, L, np.int64)}

        def chunk_call(f: dict = chunk_feeds, it: dict = items_feeds) -> None:
            vec = rt.chunk_session.run(None, f)[2][:, 0]
            rt.items_session.run(None, it | {"user_vector": vec})

        w_rates, s_rates, c_rates = [], [], []
        for _ in range(args.rounds):
            per = args.seconds / args.rounds
            w_rates.append(_rate(lambda f=win_feeds: window.run(None, f), per))
            s_rates.append(_rate(lambda f=step_feeds: step.run(None, f), per))
            c_rates.append(_rate(chunk_call, per))
        w, s, c = (B * float(np.median(r)) for r in (w_rates, s_rates, c_rates))
        print(f"| {B} | {w:,.0f} | {s:,.0f} | {s / w:.2f}x | {c:,.0f} | {c / w:.2f}x |")


def runtime_table(rt, args: argparse.Namespace, batches: tuple[int, ...] = (64, 256)) -> None:  # noqa: ANN001
    """Through ModelRuntime.update (feature encoding, cache bookkeeping, top-K lists): a full recompute
    per user vs the one-event incremental update from the cache, and 4 new events per user answered by
    4 one-event calls ("rounds") vs one chunk call. Full and incremental alternate in rounds."""
    L = rt.spec.window_length
    print("| batch | full: users/s | incremental: users/s | incremental / full "
          "| 4 events: 4 calls, events/s | 1 chunk call, events/s | chunk / rounds |")
    print("|---|---|---|---|---|---|---|")
    for B in batches:
        _runtime_row(rt, B, L, args)


def _runtime_row(rt, B: int, L: int, args: argparse.Namespace) -> None:  # noqa: ANN001
    from stream_app.model.answers import Predictions

    n = 3 * L // 2  # incremental for this count, and the 3 events before it too
    hist = [[(f"i{(u * 7 + j) % 3000}", f"c{j % 18}", j % 3, 1_000 * j) for j in range(n)]
            for u in range(B)]
    first = [0] * B
    windows = [h[n - L:n] for h in hist]
    prev: Predictions = rt.update([h[n - 1 - L:n - 1] for h in hist], [n - 1] * B, first_ts=first)
    slots = np.array([c.slot for c in prev.caches])
    back4: Predictions = rt.update([h[n - 4 - L:n - 4] for h in hist], [n - 4] * B, first_ts=first)
    slots4 = np.array([c.slot for c in back4.caches])

    c1, c4 = prev.caches[0].length, back4.caches[0].length
    held = {"full": rt.update(windows, [n] * B, first_ts=first).caches}

    def full() -> None:  # handles of this very context: never stepped, their slots are rewritten
        held["full"] = rt.update(windows, [n] * B, held["full"], first_ts=first).caches
        assert not any(c.n_events != n for c in held["full"])

    def step() -> None:
        rt.pool.filled[slots] = c1  # rewind the cached contexts to before the event this call appends
        out = rt.update(windows, [n] * B, prev.caches, first_ts=first)
        assert out.stepped.all()

    def rounds() -> None:
        rt.pool.filled[slots4] = c4
        caches = back4.caches
        for m in range(n - 3, n + 1):
            caches = rt.update([h[m - L:m] for h in hist], [m] * B, caches, first_ts=first).caches

    def chunk() -> None:
        rt.pool.filled[slots4] = c4
        out = rt.update_chunks(windows, [n] * B, back4.caches, [4] * B, first_ts=first)
        assert out.stepped.all()

    f_rates, s_rates, r_rates, c_rates = [], [], [], []
    for _ in range(args.rounds):
        per = args.seconds / args.rounds
        f_rates.append(_rate(full, per))
        s_rates.append(_rate(step, per))
        r_rates.append(_rate(rounds, per))
        c_rates.append(_rate(chunk, per))
    f, s = B * float(np.median(f_rates)), B * float(np.median(s_rates))
    r, c = 4 * B * float(np.median(r_rates)), 4 * B * float(np.median(c_rates))
    print(f"| {B} | {f:,.0f} | {s:,.0f} | {s / f:.2f}x | {r:,.0f} | {c:,.0f} | {c / r:.2f}x |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifact", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per batch size")
    ap.add_argument("--only", choices=("graphs", "runtime"), default=None)
    args = ap.parse_args()
    from stream_app.model.runtime import ModelRuntime

    with tempfile.TemporaryDirectory() as tmp:
        art = args.artifact or build_default_artifact(Path(tmp) / "bench-model")
        rt = ModelRuntime(art, threads=args.threads)
        m = rt.metadata["model"]
        print(f"model {rt.version}: d={m['d_model']} layers={m['n_layers']} heads={m['n_heads']} "
              f"L={rt.spec.window_length} items={len(rt.items)} provider={rt.provider} "
              f"threads={args.threads}")
        if args.only != "runtime":
            graph_table(rt, art, args)
        if args.only != "graphs":
            runtime_table(rt, args)


if __name__ == "__main__":
    main()
