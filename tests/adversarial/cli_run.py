"""`kernelpack ARGS` in-process for the adversarial tests: exit code, stdout, stderr (argparse's
usage errors included, which exit through SystemExit)."""

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

    @property
    def error_lines(self) -> list[str]:
        """stderr without argparse's usage block: the lines that say what is wrong."""
        lines = self.err.strip().splitlines()
        return [line for line in lines if "error" in line] if lines else []


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
    if code == 1:
        assert len(lines) == 1, lines
    error = done.error_lines[-1]
    for fragment in fragments:
        assert fragment in error, (fragment, error)
    return error
