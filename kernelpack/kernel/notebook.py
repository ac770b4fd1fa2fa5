"""Notebook kernels: the `kernel.ipynb` that `kernelpack build --notebook` writes (a markdown cell
saying what it is, then the bundle in one code cell), and what run-local needs to execute one
with a real Jupyter kernel (the runner program and how the kernel process starts).

Kaggle runs a notebook kernel cell by cell in a Jupyter kernel and keeps the executed notebook
as an output beside /kaggle/working's files. The kernel itself needs nothing beyond the Kaggle
image (the bundle is the same script a script kernel runs); nbformat, nbclient and ipykernel
are needed here only, to write and run it: the `kernelpack[notebook]` extra, which each entry
point below asks for first (one line naming it when it is missing).
"""

from __future__ import annotations

import json
from pathlib import Path

from inference_core.config import EnsembleConfig

from .. import __version__, read_template
from ..config import HostConfig
from ..errors import BuildError
from ..extras import require

NOTEBOOK_FILE = "kernel.ipynb"
RUNNER_NAME = "notebook_runner.py"
# The run's folder (beside working/) the executed notebook is written to.
EXECUTED_FOLDER = "notebook"
# Distributions the Jupyter kernel process itself runs on: on Kaggle's image (it runs
# notebooks), so the sandbox's import hook must not hide them (nor what they require) there.
JUPYTER_KERNEL = ("ipykernel",)
# Notebook metadata key marking a notebook as kernelpack's (which `build` may overwrite).
METADATA_KEY = "kernelpack"
# What the user asked for, as the missing-extra line names it.
WRITING = "build --notebook"
RUNNING = "running a notebook kernel (run-local, the local Kaggle service)"


def is_notebook(path: str | Path) -> bool:
    return Path(path).suffix == ".ipynb"


def _summary(config: EnsembleConfig) -> list[str]:
    models = config.models
    names = ", ".join(f"`{model.name}`" for model in models[:8])
    more = f" and {len(models) - 8} more" if len(models) > 8 else ""
    return [f"- **Models** ({len(models)}): {names}{more}",
            f"- **Blend**: {config.blend}; **TTA**: {', '.join(config.tta)}",
            f"- **Test images**: `../input/{config.test.images.strip('/')}`",
            f"- **Submission**: {config.submission.format}, written to "
            f"`{config.submission.file}`"]


def make_notebook(kernel_text: str, config_path: str | Path, config: HostConfig,
                  embeds_key: bool = False) -> str:
    """The notebook (nbformat v4 JSON text): what it is and which config it embeds, then the
    bundle as its one code cell. Validated against the nbformat schema."""
    require("notebook", WRITING)
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    title = config.kernel.title or Path(config_path).stem
    lines = [f"# {title}", "",
             f"Made by [kernelpack](https://pypi.org/project/kernelpack/) {__version__} from "
             f"`{Path(config_path).name}`; rebuild it with `kernelpack build "
             f"{Path(config_path).name} -o DIR --notebook` rather than editing it.", "",
             "The code cell below is the whole kernel: the kernelpack runtime and this config, "
             "bundled. Run as is, it finds the models under `../input`, predicts the test set "
             "with test-time augmentation within Kaggle's time limit, blends and writes "
             f"`{config.ensemble.submission.file}`.", "", *_summary(config.ensemble)]
    if embeds_key:
        lines += ["", "**This notebook embeds a decryption key: keep it private.**"]
    notebook = new_notebook(
        cells=[new_markdown_cell("\n".join(lines)), new_code_cell(kernel_text)],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                 "language": "python"},
                  "language_info": {"name": "python"},
                  METADATA_KEY: {"version": __version__, "config": Path(config_path).name}})
    nbformat.validate(notebook)
    return nbformat.writes(notebook) + "\n"


def parse_notebook(text: object) -> dict | None:
    """The notebook in `text` (its JSON: an object with a list of cells), or None."""
    try:
        notebook = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return notebook if isinstance(notebook, dict) and isinstance(notebook.get("cells"), list) \
        else None


def _read(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise BuildError(f"{path}: not a readable notebook ({exc}); build the kernel "
                         "again") from None
    notebook = parse_notebook(text)
    if notebook is None:
        raise BuildError(f"{path}: not a notebook (not JSON with a list of cells); build the "
                         "kernel again")
    return notebook


def check_runnable(path: Path) -> None:
    """A notebook Jupyter can run: JSON that nbformat reads and validates (BuildError, one line
    naming the file and the first problem, otherwise)."""
    require("notebook", RUNNING)
    import nbformat  # here: `kernelpack --help` needs no Jupyter

    try:
        nbformat.validate(nbformat.read(path, as_version=4))
    except Exception as exc:  # nbformat raises JSON, schema, type and attribute errors alike
        problem = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise BuildError(f"{path}: not a notebook Jupyter can run ({problem}); build it again "
                         "with kernelpack build --notebook") from None


def notebook_code(path: str | Path) -> str:
    """The code cells' source, joined: what a notebook kernel runs (for the key check)."""
    cells = _read(Path(path))["cells"]
    sources = [cell.get("source", "") for cell in cells
               if isinstance(cell, dict) and cell.get("cell_type") == "code"]
    return "\n".join("".join(s) if isinstance(s, list) else str(s) for s in sources)


def made_by_kernelpack(path: str | Path) -> bool:
    """True for a notebook `build --notebook` wrote (so a new build may overwrite it)."""
    try:
        metadata = _read(Path(path)).get("metadata")
    except BuildError:
        return False
    return isinstance(metadata, dict) and METADATA_KEY in metadata


def runner_source() -> str:
    """The program that executes a notebook in the sandbox (templates/notebook_runner.py)."""
    require("notebook", RUNNING)
    return read_template(RUNNER_NAME)
