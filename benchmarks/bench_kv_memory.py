"""Memory of the model's key/value pool after a stream of events served the way the worker serves
them (micro-batches in arrival order, each user's window as the tracker keeps it): pool slots
allocated, slots in use, bytes, users. No broker: the recommender alone.

    .venv/bin/python -m benchmarks.bench_kv_memory MODEL_DIR [--data PATH] [--events 20000] [--batch 1000]

MODEL_DIR: an artifact with window length 50 (e.g. trained on the Taobao sample by the command in
the README's benchmark section).
"""

from __future__ import annotations

import argparse
import itertools
from collections import defaultdict
from pathlib import Path

from stream_app.core.events import TYPE_CODE
from stream_app.core.recommender import RecommendationRequest
from stream_app.model.features import WindowEvent
from stream_app.model.runtime import ModelRuntime
from stream_app.model.serving import ModelRecommender
from stream_app.tools.datasets import read_dataset

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "taobao" / "UserBehavior_head84k.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--cache-users", type=int, default=10_000)
    a = ap.parse_args()
    L = 50
    rt = ModelRuntime(a.model_dir, window_length=L)
    rec = ModelRecommender(rt, k=10, cache_users=a.cache_users)
    events = list(itertools.islice(read_dataset(a.data), a.events))
    windows: dict[str, list[WindowEvent]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    first: dict[str, int] = {}
    for i in range(0, len(events), a.batch):
        requests = []
        for e in events[i:i + a.batch]:
            w = windows[e.user_id]
            w.append((e.item_id, e.category_id, TYPE_CODE[e.type], e.ts))
            w.sort(key=lambda x: x[3])
            del w[:-L]
            counts[e.user_id] += 1
            first[e.user_id] = min(first.get(e.user_id, e.ts), e.ts)
            requests.append(RecommendationRequest(e.user_id.encode(), e.ts, list(w), counts[e.user_id],
                                                  first[e.user_id], frozenset(), []))
        rec.recommend(requests)
    pool = rt.pool
    print(f"{len(events):,} events, {len(windows):,} users, batches of {a.batch}: pool slots allocated "
          f"{pool.slots:,}, in use {pool.in_use:,}, {pool.nbytes / 1e6:.1f} MB "
          f"({pool.nbytes / max(pool.slots, 1) / 1e3:.1f} KB per slot)")


if __name__ == "__main__":
    main()
