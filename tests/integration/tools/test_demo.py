"""`interest-tracker demo` for real: the session's embedded broker, a worker process serving the
packaged demo model through ONNX Runtime, the whole synthetic workload with hostile records mixed in;
its summary names the model's version, the dead letters by reason, and scores the churn warnings."""

from __future__ import annotations

import asyncio
import re

import pytest

from stream_app.core.config import Settings
from stream_app.kafka.embedded import free_port
from stream_app.model.artifact import DEMO_ARTIFACT_DIR, read_metadata
from stream_app.tools.churn_score import churners_in
from stream_app.tools.demo import DEMO_WORKLOAD, run_demo
from stream_app.tools.generate import GroundTruth, iter_synthetic_events

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@pytest.mark.timeout(1800)  # a guard against a hang only: the verdict does not depend on speed
def test_demo_serves_the_packaged_model_and_scores_churn(
        settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    settings = settings.model_copy(update={"metrics_port": free_port()})
    assert settings.model_dir is None  # the demo picks the packaged model by itself
    version = str(read_metadata(DEMO_ARTIFACT_DIR)["model_version"])
    # no time limit: the demo ends once the worker has applied and committed everything sent
    out = asyncio.run(run_demo(settings, None, duration=None, rate=5000, limit=None))
    printed = capsys.readouterr().out

    assert f"model: {version} from {DEMO_ARTIFACT_DIR}" in printed
    assert out.counts[settings.topic_recommendations] > 20_000  # every valid event was served
    assert set(out.models) == {f"attention {version}"}, out.models  # by the model, no other
    assert f"recommendations by model: attention {version}" in printed
    assert "interests of u" in printed

    # the hostile records: one dead letter each, with its reason
    assert out.dead_letters == {"malformed_json": 2, "schema_violation": 3, "future_timestamp": 1,
                                "duplicate": 1}, out.dead_letters
    assert re.search(r"dead letters: 7 \(.*malformed_json 2", printed)
    assert "dead letter: schema_violation:" in printed

    assert out.warnings, "the workload's churners decline and fall silent inside the replay"
    score = re.search(r"churn warnings vs ground truth: (\d+)/(\d+) churners warned \((\d+)%\), "
                      r"(\d+)/\d+ before their last event \(\d+%\), precision (\d+)/(\d+) \((\d+)%\), "
                      r"median lead ([-+]\d+\.\d) days", printed)
    assert score, printed
    warned, churners, _, _, true_pos, warned_users, _, _ = score.groups()
    truth = GroundTruth(DEMO_WORKLOAD)
    for _ in iter_synthetic_events(DEMO_WORKLOAD, truth):
        pass
    assert int(churners) == len(churners_in(truth)) and int(warned) > 0
    assert int(warned_users) == len({u for u, _ in out.warnings}) and int(true_pos) == int(warned)
    assert set(out.warning_rules) <= {"risk", "silence"} and out.warning_rules["risk"] > 0, out.warning_rules
    assert re.search(r"churn warnings: \d+ \(\d+ users; by rule: ", printed)
