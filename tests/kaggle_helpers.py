"""A local Kaggle service on a free port, a throwaway Kaggle account around it, and the two ways in:
the real `kaggle` command (a subprocess, through the service as its HTTP proxy) and `kernelpack`'s
commands in-process with `--kaggle-url` (the real KaggleApi, sent straight to the service)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kernelpack.cli import main
from kernelpack.kaggle.service import KaggleService
from kernelpack.metadata import DATASET_METADATA, KERNEL_METADATA, title_of

USER = "tester"
KEY = "not-a-real-key"       # USER's API key, in kaggle.json and known to the service
KAGGLE = Path(sys.executable).with_name("kaggle")
_PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY",
                    "no_proxy", "ALL_PROXY", "all_proxy")
_CREDENTIAL_VARIABLES = ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN",
                         "KAGGLE_API_ENVIRONMENT", "KAGGLE_CONFIG_DIR", "KERNELPACK_KAGGLE_URL")


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class World:
    service: KaggleService
    root: Path
    home: Path
    tmp: Path

    @property
    def url(self) -> str:
        return self.service.url

    def kaggle(self, *args: str) -> Run:
        return run_kaggle(self.home, self.tmp, self.url, *args)

    def kernelpack(self, *args: str, url: bool = True) -> Run:
        """`kernelpack ARGS --kaggle-url URL`, in-process (importing kernelpack costs seconds)."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([*args, *(["--kaggle-url", self.url] if url else [])])
        return Run(code, out.getvalue(), err.getvalue())

    def stored(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)


def kaggle_account(tmp_path: Path) -> tuple[Path, Path]:
    """A fresh HOME with kaggle.json for user USER, and a private TMPDIR."""
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    (home / "config").mkdir(parents=True)
    tmp.mkdir(mode=0o700)
    credentials = home / "config" / "kaggle.json"
    credentials.write_text(json.dumps({"username": USER, "key": KEY}))
    credentials.chmod(0o600)
    return home, tmp


def run_kaggle(home: Path, tmp: Path, url: str, *args: str) -> Run:
    """The unmodified `kaggle` command, pointed at the service at `url` the documented way."""
    env = {k: v for k, v in os.environ.items()
           if k not in _PROXY_VARIABLES + _CREDENTIAL_VARIABLES}
    env.update(HOME=str(home), KAGGLE_CONFIG_DIR=str(home / "config"), TMPDIR=str(tmp),
               KAGGLE_API_ENVIRONMENT="LOCALHOST", HTTP_PROXY=url, http_proxy=url)
    done = subprocess.run([str(KAGGLE), *args], env=env, capture_output=True, text=True,
                          timeout=120)
    return Run(done.returncode, done.stdout, done.stderr)


def kaggle_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 processing_seconds: float = 0.0, flat_input: bool = True) -> Iterator[World]:
    """Yield a started service and a fresh Kaggle account around it. Its kernels see their
    sources in the old flat layout (`../input/SLUG`, what most tests read) unless `flat_input`
    is False (today's `../input/competitions/SLUG`, `../input/datasets/OWNER/SLUG`, ...)."""
    home, tmp = kaggle_account(tmp_path)
    for name in _PROXY_VARIABLES + _CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / "config"))
    # The client keeps upload resume state under tempfile.gettempdir(), cached per process.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    with KaggleService(tmp_path / "service", processing_seconds=processing_seconds,
                       users={USER: KEY}, flat_input=flat_input) as service:
        yield World(service, service.store.root, home, tmp)


def write_files(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def dataset_folder(folder: Path, slug: str, files: dict[str, bytes]) -> Path:
    """A folder the `kaggle` command can push as dataset USER/slug."""
    write_files(folder, files)
    (folder / DATASET_METADATA).write_text(json.dumps(
        {"id": f"{USER}/{slug}", "title": title_of(slug),
         "licenses": [{"name": "CC0-1.0"}]}))
    return folder


def tiny_kernel(folder: Path, slug: str, body: str, **metadata: object) -> Path:
    """A plain script as a kernel folder (no torch import: each run costs a fraction of a second).
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kernel.py").write_text(body)
    (folder / KERNEL_METADATA).write_text(json.dumps({
        "id": f"{USER}/{slug}", "title": title_of(slug), "code_file": "kernel.py",
        "language": "python", "kernel_type": "script", "is_private": True,
        "enable_internet": False, **metadata}))
    return folder


# Writes one prediction per test id of the mounted competition: 1 for every id.
PREDICT_ONES = """\
import csv, os
print("inputs:", sorted(os.listdir("../input")))
ids = [row["id"] for row in csv.DictReader(open("../input/tinycomp/sample_submission.csv"))]
with open("submission.csv", "w") as out:
    out.write("id,label\\n" + "".join(f"{i},1\\n" for i in ids))
print("wrote", len(ids), "rows")
"""


def submit_and_check_score(world: World, competition: str, kernel: str, labels: Path) -> float:
    """Submit `kernel` to `competition` and wait; the score printed must be the accuracy of the
    rerun's submission.csv (submission 1) on the held-back `labels`, computed here."""
    submitted = world.kernelpack("submit", competition, "--kernel", kernel, "--wait")
    assert submitted.returncode == 0, submitted
    score = float(submitted.stdout.split(" scored ")[1].split(" public")[0])
    rerun = world.stored("submissions", "1", "run", "working", "submission.csv")
    with open(rerun) as predictions, open(labels) as truth:
        predicted = {row["id"]: row["label"] for row in csv.DictReader(predictions)}
        expected = {row["id"]: row["label"] for row in csv.DictReader(truth)}
    assert predicted.keys() == expected.keys()
    assert score == pytest.approx(
        sum(predicted[i] == expected[i] for i in expected) / len(expected), abs=1e-5)
    return score
