"""The ``interest-tracker`` command line. Heavy imports happen inside each command.

Service commands (:mod:`.service`, :mod:`.tools`) take every setting as an --option
(:mod:`.options`); :mod:`.training` wraps ``export/``."""

from stream_app.cli import privacy, service, tools, training  # noqa: F401 - registers the commands
from stream_app.cli.group import main

__all__ = ["main"]
