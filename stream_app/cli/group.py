"""The ``interest-tracker`` command group."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="interest-tracker")
def main() -> None:
    """Real-time streaming interest tracker."""
