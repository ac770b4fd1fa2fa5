"""The demo's last act: the fitted ensemble through Kaggle's whole loop, against the local Kaggle
service, with the same commands a user runs against Kaggle itself.

    serve-kaggle (the digits code competition: its data, its held-back labels)
    -> keygen + encrypt every model of the fitted ensemble
    -> model push (the encrypted weights as a Kaggle Model version)
    -> build --notebook (the key embedded: the kernel is private) -> kernel push --wait
    -> submit --wait (the service reruns the notebook and scores it on the held-back labels)

The service runs in this process on a free port; a throwaway account (its kaggle.json in the
demo's folder) signs the calls, and the service stops when the loop ends, whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from inference_core.config import EnsembleConfig
from kernelpack.config import load_config
from kernelpack.kaggle.service import KaggleService, add_competition

USER = "kernelpack-demo"
MODEL = "digits-ensemble"
# Where the service's credentials and the client's settings come from; cleared for the loop so
# that a real kaggle.json on this machine is never read or sent to the local service.
_CLIENT_VARIABLES = ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR",
                     "KAGGLE_API_ENVIRONMENT", "KERNELPACK_KAGGLE_URL", "HTTP_PROXY",
                     "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")

Command = Callable[[list[str]], list[str]]  # runs `kernelpack ARGS`, returns its output lines


@dataclass
class KaggleLoop:
    model_version: str  # OWNER/MODEL/FRAMEWORK/VARIATION/VERSION, as model_sources names it
    kernel: str  # OWNER/SLUG
    score: float  # what the service scored the submission at, on the held-back labels

    def agrees_with(self, score: float) -> bool:
        """Whether `score` is this one: Kaggle reports scores rounded to 5 decimals."""
        return abs(self.score - round(score, 5)) < 1e-9


@contextlib.contextmanager
def _account(folder: Path) -> Iterator[str]:
    """A throwaway Kaggle account for the loop: its key in `folder/kaggle.json` (0600), the
    client's environment pointed at it, and the previous environment back afterwards."""
    key = os.urandom(16).hex()
    folder.mkdir(parents=True)
    credentials = folder / "kaggle.json"
    credentials.write_text(json.dumps({"username": USER, "key": key}))
    credentials.chmod(0o600)
    saved = {name: os.environ.pop(name, None) for name in _CLIENT_VARIABLES}
    saved_tempdir = tempfile.tempdir
    os.environ["KAGGLE_CONFIG_DIR"] = str(folder)
    # The client keeps upload-resume state in the temporary folder: keep it in the demo's.
    (folder / "tmp").mkdir(mode=0o700)
    tempfile.tempdir = str(folder / "tmp")
    try:
        yield key
    finally:
        tempfile.tempdir = saved_tempdir
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


def kaggle_config(fitted: EnsembleConfig, competition: str, model_version: str, target: Path
                  ) -> Path:
    """The fitted ensemble (its loaded config), its weights read from the Kaggle Model: the
    models keep their names and weights (discovery finds them by identity, wherever the version
    is mounted)."""
    config = fitted.to_dict()
    config["models"] = [{key: value for key, value in entry.items() if key != "path"}
                        for entry in config["models"]]
    config["kernel"] = {"id": f"{USER}/{competition}-ensemble",
                        "competition_sources": [competition],
                        "model_sources": [model_version]}
    del config["input_roots"]
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    return target


def run_kaggle_loop(out_dir: Path, fitted: Path, models_dir: Path, competition: str,
                    data_dir: Path, labels: Path, code: list[str], kernelpack: Command
                    ) -> KaggleLoop:
    """Encrypt, push, build, run and submit the ensemble of `fitted` (its checkpoints in
    `models_dir`) to `competition` (kernels see `data_dir`; `labels` are held back)."""
    out_dir.mkdir(parents=True)
    ensemble = load_config(fitted).ensemble
    files = [Path(entry.path).name for entry in ensemble.models]
    with _account(out_dir / "account") as key, KaggleService(
            out_dir / "service", port=0, users={USER: key}) as service:
        kaggle = ["--kaggle-url", service.url]
        add_competition(service.store.root, competition, data_dir, labels)

        weights, key_file = out_dir / "encrypted", out_dir / "model.key"
        weights.mkdir()
        kernelpack(["keygen", "-o", str(key_file)])
        for name in files:
            kernelpack(["encrypt", str(models_dir / name), "--key", str(key_file), "-o",
                        str(weights / f"{Path(name).stem}.kpenc"), "--quiet"])

        handle = f"{USER}/{MODEL}/pyTorch/default"
        pushed = kernelpack(["model", "push", "-p", str(weights), "--handle", handle, "--wait",
                             *kaggle])
        model_version = _printed(r"model_sources: (\S+?);", pushed, "model push")
        config = kaggle_config(ensemble, competition, model_version, out_dir / "ensemble.yml")
        kernel_dir = out_dir / "kernel"
        kernelpack(["build", str(config), "-o", str(kernel_dir), "--notebook", "--key",
                    str(key_file), *code, "--quiet"])
        kernel = f"{USER}/{competition}-ensemble"
        kernelpack(["kernel", "push", "-p", str(kernel_dir), "--wait", *kaggle])
        submitted = kernelpack(["submit", competition, "--kernel", kernel, "--wait", *kaggle])
        score = float(_printed(r" scored ([0-9.]+) public", submitted, "submit"))
        return KaggleLoop(model_version, kernel, score)


def _printed(pattern: str, lines: list[str], command: str) -> str:
    """What `pattern`'s group matches in a command's output lines (the last such line)."""
    found = [match.group(1) for line in lines if (match := re.search(pattern, line))]
    if not found:
        raise RuntimeError(f"kernelpack {command} did not print what the demo reads "
                           f"({pattern}): {lines[-1:] or 'nothing'}")
    return found[-1]
