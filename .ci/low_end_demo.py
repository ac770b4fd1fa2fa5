"""The low-end check's run (called by .ci/low_end, in the low-end venv, from a folder holding a
copy of examples/): checks that the venv holds what it should, then runs the demo cut small and
checks each stage did its job with these versions.

    python low_end_demo.py LOW_END_CONSTRAINTS OUT_DIR
"""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path

import pandas as pd


def pinned(constraints: Path) -> dict[str, str]:
    """name -> version of each `name==version` line."""
    pins = {}
    for line in constraints.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def check_installed(pins: dict[str, str]) -> None:
    """The venv holds the low-end versions, and kernelpack from the wheel, not this checkout."""
    wrong = []
    for name, version in pins.items():
        installed = metadata.version(name)
        # torch's CUDA builds carry a local tag (2.4.1+cu121): the release is what is pinned.
        if installed.split("+")[0] != version:
            wrong.append(f"{name} {installed} (expected {version})")
    if wrong:
        sys.exit(f"low-end venv: {', '.join(wrong)}")
    import kernelpack

    where = Path(kernelpack.__file__).resolve()
    if "site-packages" not in where.parts:
        sys.exit(f"low-end venv: kernelpack imported from {where}, not from the installed wheel")
    print(f"low-end venv: {', '.join(f'{n} {v}' for n, v in sorted(pins.items()))}; kernelpack "
          f"from {where.parent}", flush=True)


def main(constraints: str, out_dir: str) -> None:
    check_installed(pinned(Path(constraints)))
    sys.path.insert(0, os.getcwd())  # the copy of examples/
    from examples.digits.demo import format_report, run_demo

    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    out = Path(out_dir)
    # Two epochs: the check is that every stage works with these versions, not the scores.
    report = run_demo(out, archs=("small_cnn",), folds=2, epochs=2, limit=400, log=log)
    print(format_report(report), flush=True)
    text = "\n".join(lines)
    problems = []
    # predict --compare: the kernel's predictions of the own model's held-out folds are the
    # user's own validation output (albumentations + cv2 there and in the kernel).
    if text.count("matches ") < 2 or "predictions differ" in text:
        problems.append("predict --compare did not match the user's validation output")
    for name, path in report.submissions.items():  # run-local wrote every row
        rows = len(pd.read_csv(path, dtype=str))
        labels = "digits-attributes_test_labels.csv" if "attributes" in name \
            else "test_labels.csv"
        if rows != len(pd.read_csv(out / "heldout" / labels, dtype=str)):
            problems.append(f"{name}: {rows} rows, not one per test image")
    # The Kaggle loop: the kaggle client pushed, ran and submitted through the local service,
    # which scored the kernel as run-local did.
    if report.kaggle is None or not report.kaggle.agrees_with(report.blend_accuracy):
        problems.append("the local Kaggle service's score differs from the offline run's")
    if problems:
        sys.exit("low-end check failed: " + "; ".join(problems))


if __name__ == "__main__":
    main(*sys.argv[1:3])
