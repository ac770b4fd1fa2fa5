"""`kernelpack ARGS` in-process for the adversarial tests: exit code, stdout, stderr (argument
errors included, which exit through SystemExit with code 2)."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

from kernelpack.cli.main import main


@dataclass
class Done:
    code: int
    out: str
    err: str


def kernelpack(*args: object) -> Done:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(arg) for arg in args])
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 1
    return Done(code, out.getvalue(), err.getvalue())


def assert_one_line_error(done: Done, *fragments: str, code: int = 1) -> str:
    """The command failed with `code` and one error line holding every fragment, no traceback."""
    assert done.code == code, done
    assert "Traceback" not in done.err, done.err
    lines = done.err.strip().splitlines()
    assert len(lines) == 1, lines  # usage errors too: no usage block
    error = lines[0]
    for fragment in fragments:
        assert fragment in error, (fragment, error)
    return error
