"""Create the tracker's input and output topics on a Kafka cluster, then exit (compose `topics`).

Settings come from the ``TRACKER_*`` environment (partitions, replication factor, security), as
for the workers. Besides the input and output topics it creates the workers' repartition topic
(``<app id>-events-by-user``) with the same partition count: created here, it cannot be created
first with another count by a producer racing Faust's own declaration, which Faust then rejects
(PartitionsMismatch with the ``user-state`` changelog). Faust creates the compacted changelog.
Retries until the cluster accepts the request: right after start-up a KRaft cluster may answer
before enough brokers have registered for the replication factor.
Environment: ``TOPICS_TIMEOUT_S`` (default 180) bounds the retries.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time

from stream_app.core.config import Settings
from stream_app.kafka.admin import create_topics

log = logging.getLogger("create_topics")


async def main() -> int:
    settings = Settings()
    topics = settings.topics_to_create()
    deadline = time.monotonic() + float(os.environ.get("TOPICS_TIMEOUT_S", "180"))
    attempt = 0
    while True:
        attempt += 1
        try:
            created = await create_topics(settings, topics)
        except Exception as exc:  # noqa: BLE001 - any failure before the deadline: try again
            if time.monotonic() >= deadline:
                log.error("giving up after %d attempts: %r", attempt, exc)
                return 1
            log.warning("attempt %d failed (%r); retrying", attempt, exc)
            await asyncio.sleep(min(2.0 * attempt, 10.0))
            continue
        log.info("brokers %s: created %s; already there: %s", settings.broker_url, created or "none",
                 sorted(set(topics) - set(created)) or "none")
        return 0


if __name__ == "__main__":
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(main()))
