"""Shared CLI plumbing: one-line errors with exit codes, JSON on stdout, tables and progress on stderr."""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import typer

from bayesmicro.errors import BadInput, BayesmicroWarning
# the plumbing jobs share with the CLI lives outside it (bayesmicro.jobs runs them without the CLI)
from bayesmicro.jobs._common import (COLLAPSED_COSINE, collapsed_heads, common_keys,
                                     model_key, pairs_for_run, print_table, progress, set_global_threads,
                                     set_threads, stderr)

# library argument → CLI option, where the option is not the argument's name with dashes
ARGUMENT_FLAGS = {"select": "--select-restart", "data_format": "--format", "out_dir": "--out", "as_json": "--json"}

_warnings: list[str] = []  # what this command said on stderr as warnings; emit_json adds them as "warnings"
_command: dict[str, Any] = {"name": None, "start": None}  # the running command and when it began (emit_json)


def option_flags(fn: Callable) -> dict[str, str]:
    """{parameter name: its first option name} of a typer command function."""
    flags = {}
    for name, parameter in inspect.signature(fn).parameters.items():
        decls = getattr(parameter.default, "param_decls", None) or ()
        options = [d for d in decls if isinstance(d, str) and d.startswith("--")]
        if options:
            flags[name] = options[0]
    return flags


def cli_message(exc: BadInput, flags: dict[str, str] | None = None) -> str:
    """The one line the CLI prints for ``exc``: a message about a Python argument names the CLI option instead."""
    message = str(exc)
    argument = getattr(exc, "argument", None)
    if argument and message.startswith(argument):
        flag = (flags or {}).get(argument) or ARGUMENT_FLAGS.get(argument) or "--" + argument.replace("_", "-")
        message = flag + message[len(argument):]
    return message


def warning(message: str) -> None:
    """A fallback, a dropped input or a no-op, said on stderr and kept for ``--json``'s ``warnings`` list."""
    if message in _warnings:  # said once
        return
    _warnings.append(message)
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, BayesmicroWarning):
        warning(str(message))
    else:
        _default_show(message, category, filename, lineno, file, line)


_default_show = warnings.showwarning


def cli_errors(fn: Callable) -> Callable:
    """Turn BadInput into a one-line message and exit code 2, any other failure into exit code 1; library warnings
    (``bayesmicro.errors.warn``) into ``warning:`` lines on stderr and the ``warnings`` list of ``--json``."""
    flags = option_flags(fn)

    name = fn.__name__.removesuffix("_command").replace("_", "-")

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _warnings.clear()
        _command.update(name=name, start=time.perf_counter())
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", BayesmicroWarning)
                warnings.showwarning = _show_warning
                return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except BadInput as exc:
            print(f"error: {cli_message(exc, flags)}", file=sys.stderr)
            raise typer.Exit(2) from None
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(2) from None
        except Exception as exc:
            if os.environ.get("BAYESMICRO_DEBUG"):
                raise
            print(f"internal error: {type(exc).__name__}: {exc} (set BAYESMICRO_DEBUG=1 for a traceback)",
                  file=sys.stderr)
            raise typer.Exit(1) from None

    return wrapper


def emit_json(obj: dict[str, Any]) -> None:
    """One JSON object on stdout, with the keys every command shares (docs/cli.md): ``command``, ``version``,
    ``seconds`` (the command's wall time; where a result's ``seconds`` is already an object of phases, as bench
    ukp's, the wall time is its ``total``) and ``warnings``."""
    start = _command["start"] if _command["start"] is not None else time.perf_counter()
    obj = common_keys(obj, _command["name"], start, _warnings)  # a job's own seconds kept; this command's name
    sys.stdout.write(json.dumps(obj, sort_keys=True, default=float) + "\n")
    sys.stdout.flush()


def parse_floats(text: str, option: str) -> list[float]:
    """Comma-separated finite numbers (nan and inf refused)."""
    from bayesmicro._check import numbers_list

    return numbers_list(text, option)


# re-exported from bayesmicro.jobs._common: what command modules (and tests) import from here
__all__ = ["ARGUMENT_FLAGS", "COLLAPSED_COSINE", "cli_errors", "cli_message", "collapsed_heads", "emit_json",
           "model_key", "option_flags", "pairs_for_run", "parse_floats", "print_table", "progress",
           "set_global_threads", "set_threads", "stderr", "warning"]
