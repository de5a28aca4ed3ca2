"""Errors a user can act on. The CLI prints them as one line and exits with code 2; warnings it prints on stderr and
lists under ``warnings`` in ``--json`` output."""

from __future__ import annotations

import warnings


class BadInput(ValueError):
    """Input that does not meet the documented contract (file, column, row, shape, value).

    ``argument``: the Python argument the message is about, when it is one (``seed``, ``out``, …); the message then
    starts with that name, which the CLI replaces with its option (``--seed``)."""

    def __init__(self, message: str, *, source: str | None = None, argument: str | None = None):
        self.source = source
        self.argument = argument
        super().__init__(f"{source}: {message}" if source else message)


class BayesmicroWarning(UserWarning):
    """Something the library did instead of what was asked, or input it left out: never silent."""


def warn(message: str) -> None:
    """Say on stderr (the CLI: and in ``--json`` output) what was substituted or dropped."""
    warnings.warn(message, BayesmicroWarning, stacklevel=2)
