"""ONNX Runtime CPU throughput of the attention model: full window vs one-event incremental step.

    .venv/bin/python -m benchmarks.bench_onnx [--artifact DIR] [--threads 2] [--seconds 2]

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifact", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="alternating window/step rounds per batch size")
    args = ap.parse_args()
    from stream_app.model.runtime import ModelRuntime

    with tempfile.TemporaryDirectory() as tmp:
        art = args.artifact or build_default_artifact(Path(tmp) / "bench-model")
        rt = ModelRuntime(art, threads=args.threads)
        m = rt.metadata["model"]
        L = rt.spec.window_length
        print(f"model {rt.version}: d={m['d_model']} layers={m['n_layers']} heads={m['n_heads']} L={L} "
              f"items={len(rt.items)} provider={rt.provider} threads={args.threads}")
        rng = np.random.default_rng(0)
        print("| batch | full window: windows/s | one-event step: updates/s | step speed-up |")
        print("|---|---|---|---|")
        for B in BATCHES:
            feats = {"item": rng.integers(2, len(rt.items), (B, L)),
                     "category": rng.integers(2, len(rt.categories), (B, L)),
                     "type": rng.integers(1, 4, (B, L)), "gap": rng.integers(1, 32, (B, L)),
                     "hour": rng.integers(1, 25, (B, L)), "count": rng.integers(1, 24, (B, L)),
                     "age": rng.integers(1, 128, (B, L)), "pace": rng.integers(1, 80, (B, L))}
            win_feeds = feats | {"length": np.full(B, L, np.int64)}
            kv = rt.window.run(["kv"], win_feeds)[0]
            step_feeds = {k: v[:, -1] for k, v in feats.items()} | {
                "position": np.full(B, L - 1, np.int64), "past_kv": kv, "context_item": feats["item"],
                "context_category": feats["category"]}
            w_rates, s_rates = [], []
            for _ in range(args.rounds):
                w_rates.append(_rate(lambda f=win_feeds: rt.window.run(None, f), args.seconds / args.rounds))
                s_rates.append(_rate(lambda f=step_feeds: rt.step_session.run(None, f),
                                     args.seconds / args.rounds))
            w, s = B * float(np.median(w_rates)), B * float(np.median(s_rates))
            print(f"| {B} | {w:,.0f} | {s:,.0f} | {s / w:.2f}x |")
        # End to end through the runtime API (feature encoding, cache bookkeeping, top-K lists).
        B = 256
        hist = [[(f"i{(u * 7 + j) % 3000}", f"c{j % 18}", j % 3, 1_000 * j) for j in range(3 * L // 2)]
                for u in range(B)]
        n = 3 * L // 2  # incremental for this count
        windows = [h[n - L:n] for h in hist]
        first = [0] * B
        prev = rt.update([h[n - 1 - L:n - 1] for h in hist], [n - 1] * B, first_ts=first)
        full_rate = _rate(lambda: rt.update(windows, [n] * B, first_ts=first), args.seconds)
        step_rate = _rate(lambda: rt.update(windows, [n] * B, prev.caches, first_ts=first), args.seconds)
        print(f"ModelRuntime.update, batch {B}: full {B * full_rate:,.0f} users/s, "
              f"incremental {B * step_rate:,.0f} users/s ({step_rate / full_rate:.2f}x)")


if __name__ == "__main__":
    main()
