"""Run the `bayesmicro` CLI as a user would: its real entry point (``bayesmicro.cli.app:main``) with the given argv.

By default the command runs inside the test process (same argv parsing, same ``main`` wrapper, same exit codes, stdout
and stderr captured), which saves the ~1.5–3 s that a fresh interpreter spends importing torch on every call. A call
that passes ``env`` (read at import time by some libraries), ``subprocess=True``, or a whole run with
``BAYESMICRO_TEST_CLI=subprocess`` uses a real child process instead: what users run, byte for byte."""

from __future__ import annotations

import io
import json
import os
import subprocess as _subprocess
import sys
import threading
import traceback
import warnings
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from tests.common import child_env

ROOT = Path(__file__).resolve().parents[2]
IN_PROCESS = os.environ.get("BAYESMICRO_TEST_CLI", "in-process") != "subprocess"
_LOCK = threading.Lock()  # sys.argv, sys.stdout/stderr, the cwd and warnings' state are process-wide


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected one JSON line on stdout, got {self.stdout!r}"
        return json.loads(lines[0])


def run_cli(*args: str, timeout: float = 300, env: dict | None = None, subprocess: bool = False,
            cwd: Path = ROOT) -> Result:
    """`bayesmicro ARGS` run in ``cwd`` (default: the checkout)."""
    if subprocess or env or not IN_PROCESS:
        return run_cli_subprocess(*args, timeout=timeout, env=env, cwd=cwd)
    return run_cli_in_process(*args, cwd=cwd)


def run_cli_subprocess(*args: str, timeout: float = 300, env: dict | None = None, cwd: Path = ROOT) -> Result:
    full_env = child_env(**(env or {}))
    proc = _subprocess.run([sys.executable, "-m", "bayesmicro.cli.app", *map(str, args)], capture_output=True,
                           text=True, timeout=timeout, env=full_env, cwd=cwd)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def _python_default_warnings(err: io.StringIO) -> None:
    """The warning filters and printing of a fresh ``python`` (pytest records warnings instead of printing them)."""
    warnings.resetwarnings()
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.simplefilter("ignore", category)

    def show(message, category, filename, lineno, file=None, line=None):
        err.write(warnings.formatwarning(message, category, filename, lineno, line))

    warnings.showwarning = show


def _stderr_log_handlers() -> list:
    """Logging handlers that write to this process's stderr (e.g. ArviZ's, transformers'): a child process's would
    write to the captured stderr, so these are pointed at it for the call."""
    import logging

    streams = {id(sys.stderr), id(sys.__stderr__)}
    loggers = [logging.getLogger()] + [l for l in logging.Logger.manager.loggerDict.values()
                                       if isinstance(l, logging.Logger)]
    return [h for l in loggers for h in l.handlers
            if type(h) is logging.StreamHandler and id(getattr(h, "stream", None)) in streams]


def run_cli_in_process(*args: str, cwd: Path = ROOT) -> Result:
    import pyro
    import torch

    from bayesmicro.cli import app as cli_app

    cli_common = sys.modules.get("bayesmicro.cli.common")  # where the CLI keeps python's warning printer

    out, err = io.StringIO(), io.StringIO()
    with _LOCK:
        saved_argv, saved_cwd, saved_threads = sys.argv, os.getcwd(), torch.get_num_threads()
        saved_default_show = getattr(cli_common, "_default_show", None)
        sys.argv = ["bayesmicro", *map(str, args)]
        code = 0
        handlers = []
        try:
            os.chdir(cwd)
            pyro.clear_param_store()  # a fresh process starts with an empty one
            to_stderr = _stderr_log_handlers()
            with redirect_stdout(out), redirect_stderr(err), warnings.catch_warnings():
                _python_default_warnings(err)
                if saved_default_show is not None:  # non-library warnings: printed, as by python
                    cli_common._default_show = warnings.showwarning
                handlers = [(h, h.setStream(err)) for h in to_stderr]
                try:
                    cli_app.main()
                except SystemExit as exc:  # what the interpreter does with sys.exit's argument
                    if exc.code is None:
                        code = 0
                    elif isinstance(exc.code, int):
                        code = exc.code
                    else:
                        print(exc.code, file=sys.stderr)
                        code = 1
                except KeyboardInterrupt:
                    raise
                except BaseException:  # an uncaught exception: a traceback and exit code 1
                    traceback.print_exc(file=err)
                    code = 1
        finally:
            for handler, stream in handlers:
                handler.setStream(stream)
            if saved_default_show is not None:
                cli_common._default_show = saved_default_show
            sys.argv = saved_argv
            os.chdir(saved_cwd)
            torch.set_num_threads(saved_threads)
            pyro.clear_param_store()
    return Result(code, out.getvalue(), err.getvalue())


def assert_bad_input(result: Result, *fragments: str) -> None:
    """Exit code 2, one line on stderr naming what is wrong, no traceback, nothing on stdout."""
    assert result.code == 2, (result.code, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert result.stdout == ""
