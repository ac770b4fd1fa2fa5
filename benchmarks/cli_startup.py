"""How fast the `kernelpack` command answers: `kernelpack --help`, and `kernelpack bundle` of a
~3 KB script, each the wall time of a fresh process (interpreter start-up included), median of
`runs`. Neither needs torch, so neither may pay for importing it.

    .venv/bin/python -m benchmarks.cli_startup [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# A plain script of about 3 KB that imports a module of its own folder.
_HELPER = "".join(f"def step_{i}(x):\n    return x * {i} + {i}  # one step of the pipeline\n\n"
                  for i in range(45))
_MAIN = ("import json\n\nimport helper\n\n"
         "print(json.dumps([getattr(helper, f'step_{i}')(1) for i in range(45)]))\n")


def _command() -> list[str]:
    script = Path(sys.executable).with_name("kernelpack")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "kernelpack"]


def _seconds(command: list[str], cwd: Path) -> float:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def measure(runs: int = 7) -> dict:
    kernelpack = _command()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "helper.py").write_text(_HELPER)
        (root / "main.py").write_text(_MAIN)
        script_bytes = sum(p.stat().st_size for p in root.glob("*.py"))
        _seconds([*kernelpack, "--help"], root)        # warm the file cache once
        help_runs = [_seconds([*kernelpack, "--help"], root) for _ in range(runs)]
        bundle_runs = [_seconds([*kernelpack, "bundle", "main.py", "-o", "out.py"], root)
                       for _ in range(runs)]
    return {"command": " ".join(kernelpack), "runs": runs, "script_bytes": script_bytes,
            "help_seconds_median": round(statistics.median(help_runs), 3),
            "bundle_seconds_median": round(statistics.median(bundle_runs), 3),
            "help_seconds": [round(s, 3) for s in help_runs],
            "bundle_seconds": [round(s, 3) for s in bundle_runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    print(json.dumps(measure(parser.parse_args().runs), indent=2))


if __name__ == "__main__":
    main()
