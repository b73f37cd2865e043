"""The ``flask models`` group's machinery, below every module of subcommands: ``--model NAME`` on each
subcommand (also one defined in a module of its own and added with ``add_command``),
:func:`selected_registry`, the registry a running subcommand is about, and :func:`describe_error`, the
one line every failure prints."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any, TypeVar

import click
from flask.cli import AppGroup, with_appcontext

from .context import get_registry
from .errors import RegistryError, StorageUnavailableError, UnknownModelError
from .registry import ModelRegistry

F = TypeVar("F", bound=Callable[..., Any])
_MODEL = "model_registry.model"  # where the chosen --model is kept in the click context
_AGE = re.compile(r"(\d+)\s*([smhdw])", re.ASCII)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _selecting_model(callback: Callable[..., Any]) -> Callable[..., Any]:
    """``callback`` behind ``--model NAME``: the name is kept for :func:`selected_registry`; an
    unknown one is one ``Error:`` line naming it."""

    @wraps(callback)
    def run(*args: Any, model_name: str | None = None, **kwargs: Any) -> Any:
        try:
            get_registry(model_name)
        except UnknownModelError as exc:
            raise click.ClickException(str(exc)) from None
        click.get_current_context().meta[_MODEL] = model_name
        return callback(*args, **kwargs)

    return run


class ModelsGroup(AppGroup):
    """A command group whose every subcommand takes ``--model NAME``, also one defined elsewhere
    and added with ``add_command``."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if cmd.callback is not None and "model_name" not in {param.name for param in cmd.params}:
            cmd.params.append(
                click.Option(
                    ["--model", "model_name"],
                    metavar="NAME",
                    help="A named model (MODEL_REGISTRY_MODELS) instead of the default registry.",
                )
            )
            cmd.callback = with_appcontext(_selecting_model(cmd.callback))  # the check needs the app
        super().add_command(cmd, name)


def parse_age(text: str) -> timedelta | None:
    """An age such as ``90m``, ``12h``, ``30d`` (also ``s`` and ``w``); None if ``text`` is none."""
    age = _AGE.fullmatch(text.strip())
    if age is None:
        return None
    digits, unit = age.groups()
    if len(digits) > 12:  # more days than the calendar has: not even worth an int
        raise OverflowError(text)
    return timedelta(**{_UNITS[unit]: int(digits)})


def selected_model() -> str | None:
    """The ``--model NAME`` of the running subcommand; None for the default registry."""
    return click.get_current_context().meta.get(_MODEL)


def selected_registry() -> ModelRegistry:
    """The registry the running subcommand is about: ``--model NAME``'s, else the default one."""
    return get_registry(selected_model())


def describe_error(exc: BaseException) -> str:
    """One line for the operator: the registry's message, or an OS error with the path it names."""
    if isinstance(exc, StorageUnavailableError) and exc.location:
        return f"{exc} ({exc.location})"
    if isinstance(exc, RegistryError):
        return str(exc)
    if isinstance(exc, OSError):
        what = exc.strerror or str(exc) or type(exc).__name__
        return f"{what}: {exc.filename}" if exc.filename else what
    return f"{type(exc).__name__}: {exc}"


def clean_errors(command: F) -> F:
    """``command`` with every registry or OS error turned into one ``Error:`` line, exit status 1."""

    @wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (RegistryError, OSError) as exc:
            raise click.ClickException(describe_error(exc)) from None

    return run  # type: ignore[return-value]
