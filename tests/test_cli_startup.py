"""The CLI starts at once: `--help` of every command, and every command that needs no model, run
for real in a fresh interpreter, never import torch (seconds of start-up on a laptop)."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from kaggle_helpers import USER, kaggle_world, tiny_kernel, write_files

from inference_core.checkpoint import save_checkpoint
from inference_core.model_factory import create_model
from kernelpack.cli.main import make_parser

# Runs `kernelpack ARGS` and says on its last stderr line whether torch got imported.
DRIVER = """\
import sys
from kernelpack.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
except KeyboardInterrupt:
    code = 130
print(f"kernelpack-exit={code} torch-imported={'torch' in sys.modules}", file=sys.stderr)
"""
HELP_ALL = """\
import sys
from kernelpack.cli.main import make_parser
parser = make_parser()
for command in sys.argv[1:]:
    try:
        parser.parse_args([*command.split(), "--help"])
    except SystemExit:
        pass
print(f"torch-imported={'torch' in sys.modules}", file=sys.stderr)
"""


def _commands(parser, prefix=()):
    """Every runnable command path (`kernel push`, `blend search`, ...)."""
    found = []
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        for name, sub in action.choices.items():
            found.extend(_commands(sub, (*prefix, name)) or [" ".join((*prefix, name))])
    return found


def _kernelpack(*args, cwd, env=None, **kwargs):
    done = subprocess.run([sys.executable, "-c", DRIVER, *map(str, args)], cwd=cwd,
                          env=env or {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"},
                          capture_output=True, text=True, timeout=120, **kwargs)
    verdict = done.stderr.strip().splitlines()[-1]
    assert verdict.startswith("kernelpack-exit=0 "), f"{args}\n{done.stdout}\n{done.stderr}"
    return verdict.endswith("torch-imported=True"), done.stdout


def test_help_of_every_command_imports_no_torch(tmp_path):
    commands = _commands(make_parser())
    assert {"bundle", "dataset push", "kernel push", "submit", "serve-kaggle", "blend search",
            "threshold search", "keygen", "inspect", "build", "run-local", "wheels",
            "prototypes", "model push"} <= set(commands)
    done = subprocess.run([sys.executable, "-c", HELP_ALL, *commands], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("usage: kernelpack") == len(commands)
    assert done.stderr.strip().splitlines()[-1] == "torch-imported=False", done.stderr
    torch, out = _kernelpack("--help", cwd=tmp_path)
    assert not torch and "serve-kaggle" in out


def test_keys_encrypt_and_bundle_run_without_torch(tmp_path):
    script = tmp_path / "app.py"
    script.write_text("import json\n" + "\n".join(f"X{i} = {i} * 2  # filler" for i in range(150))
                      + "\nprint(json.dumps(X149))\n")
    torch, out = _kernelpack("bundle", script, "-o", tmp_path / "one.py", cwd=tmp_path)
    assert not torch and "wrote" in out
    torch, _ = _kernelpack("keygen", "-o", tmp_path / "k.key", cwd=tmp_path)
    assert not torch and (tmp_path / "k.key").is_file()

    # Preprocess fields are checked too (size, resize, normalisation), still without torch.
    save_checkpoint(tmp_path / "m.pt", "small_cnn", 3,
                    {"name": "m", "fold": 1, "input_size": 24, "resize": "shortest",
                     "mean": [0.5] * 3, "std": [0.25] * 3},
                    create_model("small_cnn", num_classes=3, width=4))
    torch, out = _kernelpack("encrypt", tmp_path / "m.pt", "--key", tmp_path / "k.key", "-o",
                             tmp_path / "m.kpenc", cwd=tmp_path)
    assert not torch and "model 'm' fold 1" in out
    torch, out = _kernelpack("inspect", tmp_path / "m.kpenc", cwd=tmp_path)
    assert not torch and json.loads(out)["manifest"]["arch"] == "small_cnn"
    torch, _ = _kernelpack("decrypt", tmp_path / "m.kpenc", "--key", tmp_path / "k.key", "-o",
                           tmp_path / "back.pt", cwd=tmp_path)
    assert not torch and (tmp_path / "back.pt").read_bytes() == (tmp_path / "m.pt").read_bytes()


def test_blend_and_threshold_search_run_without_torch(tmp_path):
    rng = np.random.default_rng(0)
    truth = rng.random((60, 3)) < 0.4
    (tmp_path / "labels.csv").write_text("id,label\n" + "".join(
        f"{i},{' '.join(str(c) for c in np.flatnonzero(row))}\n" for i, row in enumerate(truth)))
    np.save(tmp_path / "folds.npy", np.arange(60) % 3)
    oof = []
    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", np.clip(truth + rng.normal(0, 0.4, truth.shape), 0, 1))
        oof += ["--oof", f"{name}={tmp_path / f'{name}.npy'}"]
    common = [*oof, "--labels", tmp_path / "labels.csv", "--folds", tmp_path / "folds.npy"]
    (tmp_path / "base.yml").write_text(
        "models: [{name: a, path: x/a.pt}, {name: b, path: x/b.pt}]\n"
        "test: {images: comp/test}\nsubmission: {format: multilabel, classes: [0, 1, 2]}\n")
    torch, _ = _kernelpack("blend", "search", *common, "--metric", "f2", "--base",
                           tmp_path / "base.yml", "--restarts", "2", "-o", tmp_path / "b.yml",
                           cwd=tmp_path)
    assert not torch
    torch, _ = _kernelpack("threshold", "search", *common, "--base", tmp_path / "b.yml", "-o",
                           tmp_path / "t.yml", cwd=tmp_path)
    assert not torch and (tmp_path / "t.yml").is_file()


@pytest.fixture
def world(tmp_path, monkeypatch):
    yield from kaggle_world(tmp_path, monkeypatch)


@pytest.mark.slow
def test_kaggle_commands_run_without_torch(world, tmp_path):
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "TMPDIR": str(world.tmp)}
    url = ["--kaggle-url", world.url]
    folder = write_files(tmp_path / "models", {"w.bin": b"\x01" * 100})
    torch, out = _kernelpack("dataset", "push", folder, "--wait", *url, cwd=tmp_path, env=env)
    assert not torch and "version 1 is ready" in out
    weights = write_files(tmp_path / "weights", {"w.kpenc": b"\x02" * 100})
    torch, out = _kernelpack("model", "push", weights, "--handle", f"{USER}/tiny/pyTorch/default",
                             "--wait", *url, cwd=tmp_path, env=env)
    assert not torch and "version 1 is ready" in out
    kernel = tiny_kernel(tmp_path / "k", "tiny-kernel", "print('hello')\n")
    torch, out = _kernelpack("kernel", "push", kernel, "--wait", *url, cwd=tmp_path, env=env)
    assert not torch and "ran to completion" in out
    torch, out = _kernelpack("kernel", "logs", f"{USER}/tiny-kernel", *url, cwd=tmp_path, env=env)
    assert not torch and "hello" in out


def test_serve_kaggle_runs_without_torch(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-c", DRIVER, "serve-kaggle", "--root", str(tmp_path / "s"), "--port",
         "0"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
    try:
        assert process.stdout.readline().startswith("local Kaggle service at http://")
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
    # Stopped with Ctrl-C: whichever way the interrupt unwinds, torch was never imported.
    assert err.strip().splitlines()[-1] in (
        "kernelpack-exit=0 torch-imported=False", "kernelpack-exit=130 torch-imported=False"), err
