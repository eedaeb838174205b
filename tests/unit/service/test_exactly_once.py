"""TRACKER_PROCESSING_GUARANTEE=exactly_once: refused on the embedded broker (no transactions);
the Kafka behaviour is tested in tests/integration/service/test_kafka_failures.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stream_app.core.config import Settings
from stream_app.kafka.embedded import StartupError
from stream_app.service import compat
from stream_app.service.app import make_faust_app
from stream_app.service.sender import RecordSender


def test_exactly_once_needs_the_kafka_profile(tmp_path: Path) -> None:
    settings = Settings(broker_profile="embedded", processing_guarantee="exactly_once",
                        data_dir=tmp_path)
    with pytest.raises(StartupError, match="needs Apache Kafka"):
        make_faust_app(settings)


def test_at_least_once_is_the_default_and_exactly_once_needs_the_app() -> None:
    assert Settings().processing_guarantee == "at_least_once"
    assert not RecordSender(Settings()).exactly_once
    with pytest.raises(ValueError, match="needs the Faust app"):
        RecordSender(Settings(processing_guarantee="exactly_once"))


def test_faust_new_offset_stops_short_of_the_acknowledged_offsets_after_a_gap() -> None:
    """The Faust 0.15.3 defect that ``compat.commit_under`` works around, with Faust's own code.

    A read_committed consumer of a transactional topic skips offsets (markers, aborted records).
    Faust's fetch loop records the skipped range as a gap *including the offset of the record it
    is delivering* (``_add_gap(tp, r_offset + 1, offset)`` adds ``[from, offset + 1)``). Once that
    record is acknowledged, ``_new_offset`` merges the gap into the acknowledged list, the record's
    offset is there twice, the run of consecutive offsets breaks at it, and the commit stops there:
    below acknowledged records whose outputs are in the transaction it commits. A crash before the
    next commit re-reads them (the 590 "duplicate" dead letters, docs/apache-kafka.md)."""
    import asyncio
    from collections import defaultdict
    from types import SimpleNamespace

    from faust.transport.consumer import Consumer
    from faust.types import TP
    from intervaltree import IntervalTree

    tp = TP("events-by-user", 0)
    consumer: Any = SimpleNamespace(_gap=defaultdict(IntervalTree), _acked=defaultdict(list),
                                    _acked_index=defaultdict(set),
                                    _committed_offset=defaultdict(lambda: None))
    consumer._committed_offset[tp] = 100
    # records 100..109 were delivered and acknowledged; 110 is a commit marker; the fetch loop
    # delivers 111 after 109: a gap, recorded as [110, 112)
    asyncio.run(Consumer._add_gap(consumer, tp, 110, 111))
    for offset in [*range(100, 110), *range(111, 121)]:  # all delivered records acknowledged
        consumer._acked[tp].append(offset)
        consumer._acked_index[tp].add(offset)
    acked = list(consumer._acked[tp])
    assert Consumer._new_offset(consumer, tp) == 112  # Faust: not 121

    # the tracker's commit (compat.commit_under): each partition's records are acknowledged in
    # offset order, so it commits the highest acknowledged offset + 1, under the step lock
    committed: list[dict[TP, int]] = []

    async def commit_offsets(offsets: dict[TP, int], start_new_transaction: bool) -> bool:
        assert lock.locked()
        committed.append(dict(offsets))
        return True

    consumer._acked[tp], consumer._acked_index[tp] = acked, set(acked)
    consumer.in_transaction, consumer._commit_offsets = True, commit_offsets
    lock = asyncio.Lock()
    compat.commit_under(SimpleNamespace(consumer=consumer), lock)  # type: ignore[arg-type]
    assert asyncio.run(consumer._commit_tps([], start_new_transaction=True))
    assert committed == [{tp: 121}]
    assert not consumer._acked[tp] and not asyncio.run(consumer._commit_tps([], True))


def test_recovery_highwaters_are_fetched_not_cached() -> None:
    """compat.fetched_highwaters: Faust's recovery asks the brokers (ListOffsets, with the
    consumer's read_committed isolation) instead of aiokafka's cached last_stable_offset, which is
    None for a changelog partition not fetched since a hand-over (ConsistencyError, 6 > -1). An
    app on Apache Kafka keeps the brokers' answer (the embedded broker's correction is tested on a
    real one: tests/integration/kafka/test_embedded_end_offsets.py)."""
    import asyncio
    from types import SimpleNamespace

    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
    from faust.types import TP

    original = AIOKafkaConsumerThread._highwaters
    try:
        app: Any = SimpleNamespace()
        compat.fetched_highwaters(app, embedded=False)
        compat.fetched_highwaters(app, embedded=False)  # once per process
        tp = TP("user-state-changelog", 0)

        async def end_offsets(partitions: list[TP]) -> dict[TP, int]:
            return dict.fromkeys(partitions, 7)

        aiokafka = SimpleNamespace(end_offsets=end_offsets, last_stable_offset=lambda tp: None)
        thread: Any = SimpleNamespace(_ensure_consumer=lambda: aiokafka, app=app,
                                      consumer=SimpleNamespace(in_transaction=True))
        assert asyncio.run(AIOKafkaConsumerThread._highwaters(thread, [tp])) == {tp: 7}
    finally:
        AIOKafkaConsumerThread._highwaters = original  # type: ignore[method-assign]
