"""Errors a user can act on. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class BadInput(ValueError):
    """Input that does not meet the documented contract (file, column, row, shape, value)."""

    def __init__(self, message: str, *, source: str | None = None):
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)
