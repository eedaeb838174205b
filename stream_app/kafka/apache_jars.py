"""The Apache Kafka broker's jars (deploy/kafka/pom.xml), fetched once with Maven into a cache.

``python -m stream_app.kafka.apache_jars`` fetches them and prints the folder. Standard library only:
CI runs it with a bare ``python3`` before the project is installed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

POM_RELATIVE = Path("deploy/kafka/pom.xml")


class KafkaUnavailable(RuntimeError):
    """Java or Maven is missing (or the jars cannot be fetched): Apache Kafka cannot run here."""


def _pom() -> Path:
    # walk up from this file to the repository root: the module is meant to move packages
    for parent in Path(__file__).resolve().parents:
        if (parent / POM_RELATIVE).is_file():
            return parent / POM_RELATIVE
    raise KafkaUnavailable(f"{POM_RELATIVE} not found above {Path(__file__).parent}")


def kafka_version() -> str:
    """The broker version the pom declares (``<kafka.version>``)."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", _pom().read_text())
    if not match:
        raise KafkaUnavailable(f"no <kafka.version> in {_pom()}")
    return match.group(1).strip()


def kafka_home() -> Path:
    """Where the jars live: ``$TRACKER_KAFKA_HOME`` or ``~/.cache/interest-tracker/kafka-<version>``."""
    env = os.environ.get("TRACKER_KAFKA_HOME")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "interest-tracker" / f"kafka-{kafka_version()}"


def java_binary() -> str:
    java = shutil.which("java")
    if not java:
        raise KafkaUnavailable("java not found on PATH: Apache Kafka needs Java 17+")
    return java


def fetch_jars() -> Path:
    """The broker's jars directory, fetched with Maven the first time (idempotent)."""
    java_binary()
    jars = kafka_home() / "jars"
    done = jars / ".complete"  # written last: a half-copied folder is never taken as complete
    if done.exists():
        return jars
    mvn = shutil.which("mvn")
    if not mvn:
        raise KafkaUnavailable(
            f"mvn not found on PATH: needed once to fetch the Kafka jars into {jars} "
            "(or set TRACKER_KAFKA_HOME to a folder holding jars/)"
        )
    jars.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="jars-", dir=jars.parent))  # concurrent fetches don't mix
    cmd = [mvn, "-B", "-q", "-f", str(_pom()), "dependency:copy-dependencies",
           f"-DoutputDirectory={staging}"]
    log.info("fetching Kafka jars: %s", " ".join(cmd))
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
        shutil.rmtree(staging, ignore_errors=True)
        tail = (result.stdout + result.stderr).strip().splitlines()[-1:] or ["no output"]
        raise KafkaUnavailable(f"mvn could not fetch the Kafka jars: {tail[0]}")
    (staging / ".complete").touch()
    try:
        staging.rename(jars)
    except OSError:  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)
    return jars


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        print(fetch_jars())
    except KafkaUnavailable as exc:
        sys.exit(str(exc))
