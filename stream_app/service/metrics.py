"""Prometheus metrics of the tracker (served with Faust's own sensor metrics on /metrics)."""

from __future__ import annotations

import collections
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)



def count(counter: Counter, labels: Iterable[tuple[str, ...]]) -> None:
    """Add to ``counter`` the occurrences of each label tuple: one ``labels()`` lookup per distinct
    tuple of a micro-batch rather than per event."""
    for values, n in collections.Counter(labels).items():
        counter.labels(*values).inc(n)


INPUT_MESSAGES = Counter("tracker_input_messages", "Input messages consumed", ["topic"])
EVENTS = Counter("tracker_events", "Input events applied to user state", ["topic", "type"])
DEAD_LETTERS = Counter("tracker_dead_letters", "Messages sent to the dead-letter topic", ["reason"])
OUTPUTS = Counter("tracker_outputs", "Output records emitted", ["topic"])
PROCESSING_SECONDS = Histogram(
    "tracker_processing_seconds",
    "Wall time from the worker receiving an event to its output being sent",
    buckets=LATENCY_BUCKETS,
)
EVENT_TO_OUTPUT_SECONDS = Histogram(
    "tracker_event_to_output_seconds",
    "Wall time from the input record's Kafka timestamp to its output being sent",
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "tracker_batch_events", "Events per micro-batch", buckets=(1, 10, 50, 100, 250, 500, 1000, 5000)
)
USERS_TRACKED = Gauge("tracker_users_tracked", "Users whose state this worker holds")
ALIGNED_EVENTS = Counter(
    "tracker_aligned_events",
    "Input events forwarded by the event-time merge: 'aligned' (every empty source caught up) or "
    "'idle' (passed a source that looked idle for TRACKER_ALIGN_MAX_WAIT_S without a fresh fetch) or "
    "'stalled' (passed a source reported behind that delivered nothing for TRACKER_ALIGN_STALL_S)",
    ["how"],
)
WATERMARK = Gauge("tracker_watermark_ms", "Event-time watermark per partition", ["partition"])
MODEL_SECONDS = Histogram(
    "tracker_model_seconds", "Model inference time per micro-batch", buckets=LATENCY_BUCKETS
)

MODEL_UPDATES = Counter(
    "tracker_model_updates", "Users answered by the model, by path (one-event step or full window)",
    ["path"],
)
MODEL_CACHE_BYTES = Gauge(
    "tracker_model_cache_bytes", "Memory held by the model's cached keys/values (the KV pool)"
)

MODEL_ANN_RECALL = Gauge(
    "tracker_model_ann_recall", "Recall@10 of the model's ANN item ranking, measured at load on the "
    "artifact's held-out user vectors (1: ranked exactly)"
)
MODEL_INFO = Gauge("tracker_model_info", "The recommender in service (1), by name and version",
                   ["name", "version"])
MODEL_RELOADS = Counter(
    "tracker_model_reloads",
    "Model versions taken into service after start ('loaded') or refused as unservable ('refused')",
    ["outcome"],
)
for _outcome in ("loaded", "refused"):  # exported at 0 from the start, so dashboards and alerts see them
    MODEL_RELOADS.labels(_outcome)

_started: set[tuple[str, int]] = set()


def serve(host: str, port: int) -> None:
    """Start the /metrics HTTP endpoint once per process (port 0 disables it)."""
    if port and (host, port) not in _started:
        start_http_server(port, addr=host)
        _started.add((host, port))


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]  # (sample name, sorted labels) -> value


def scrape(host: str, port: int, timeout: float = 5) -> Samples:
    """A worker's /metrics as {(sample name, sorted labels): value} (raises OSError if unreachable)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://{host}:{port}/metrics"
    text = urllib.request.urlopen(url, timeout=timeout).read().decode()  # noqa: S310 - loopback
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}
