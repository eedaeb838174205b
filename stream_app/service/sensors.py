"""Faust's Prometheus sensor without its per-message and per-event hooks.

Faust calls every sensor for every message consumed and every event a stream yields (four calls
each, through a dict comprehension over the sensors); its ``PrometheusMonitor`` then updates several
labelled series per call. In the tracker, where every event passes two streams (``ingest`` and
``track``), that was about a tenth of the worker's time. The tracker counts what it consumes and
applies itself (``tracker_input_messages_total``, ``tracker_events_total``, ``tracker_batch_events``),
so these hooks are left out; the rest of Faust's sensor (commits, end offsets, rebalances, producer
sends, tables, web) is kept: the dashboards read ``topic_partition_end_offset``,
``topic_partition_offset_commited`` and the rebalance counters."""

from __future__ import annotations

from typing import Any

from faust.sensors.prometheus import PrometheusMonitor


class LeanPrometheusMonitor(PrometheusMonitor):
    """:class:`PrometheusMonitor` minus ``on_message_in/out`` and ``on_stream_event_in/out``."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any,
                            state: Any = None) -> None:
        return None
