"""Service-command options built from :class:`Settings` itself: every ``TRACKER_*`` setting is an
``--option`` of every service command, with the field's type, description and default."""

from __future__ import annotations

import functools
import logging
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from stream_app.core.config import Settings


def _click_type(annotation: Any) -> Any:
    """The click parameter type of a Settings field (its Optional part removed)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if typing.get_origin(annotation) is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(annotation)])
    if annotation is Path:
        return click.Path(path_type=Path)
    return annotation if annotation in (int, float, str) else str


def _help(name: str) -> str:
    info = Settings.model_fields[name]
    default = "unset" if info.default is None else info.default
    return f"{info.description or name.replace('_', ' ')} [env TRACKER_{name.upper()}; default {default}]"


def settings_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command one --option per Settings field; it receives ``settings: Settings`` built from
    the options given, then the environment, then the defaults."""
    fields = tuple(Settings.model_fields)

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> Any:
        given = {f: kwargs.pop(f) for f in fields if kwargs.get(f) is not None}
        for f in fields:
            kwargs.pop(f, None)
        try:
            settings = Settings(**given)
        except ValidationError as exc:
            problems = "; ".join(f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}"
                                 for e in exc.errors())
            raise click.UsageError(problems) from None
        logging.basicConfig(level=settings.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return fn(settings=settings, **kwargs)

    for name in reversed(fields):
        info = Settings.model_fields[name]
        wrapper = click.option("--" + name.replace("_", "-"), name, type=_click_type(info.annotation),
                               default=None, help=_help(name))(wrapper)
    return wrapper
