"""The CLI is built from the settings: every TRACKER_* setting is an option of every service command."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from stream_app.cli import main
from stream_app.core.config import Settings

SERVICE_COMMANDS = ("broker", "worker", "demo", "record", "replay", "load-dataset", "generate")


@pytest.mark.parametrize("name", SERVICE_COMMANDS)
def test_every_setting_is_an_option(name: str) -> None:
    command = main.commands[name]
    options = {o for p in command.params if isinstance(p, click.Option) for o in p.opts}
    missing = [f for f in Settings.model_fields if "--" + f.replace("_", "-") not in options]
    assert missing == []


def test_options_are_typed_and_validated_with_a_one_line_error() -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["worker", "--dedupe-memory", "0"])
    assert res.exit_code == 2 and "--dedupe-memory: Input should be greater than or equal to 1" in res.output
    res = runner.invoke(main, ["worker", "--broker-profile", "zookeeper"])
    assert res.exit_code == 2 and "'zookeeper' is not one of 'embedded', 'kafka'" in res.output
    assert "Traceback" not in res.output
