"""The local Kaggle service driven by the unmodified `kaggle` command (KAGGLE_API_ENVIRONMENT=
LOCALHOST, the service as HTTP proxy): datasets, kernel runs, code submissions, restarts."""

import hashlib
import json
import shutil
import signal
import subprocess
import sys

import pytest
import requests
from kaggle_helpers import (
    KEY,
    PREDICT_ONES,
    USER,
    dataset_folder,
    kaggle_account,
    kaggle_world,
    run_kaggle,
    tiny_kernel,
    write_files,
)

from kernelpack.kaggle.service import KaggleService, add_competition
from kernelpack.kaggle.session import KaggleSession

# Every test here starts the local Kaggle service (half a second to stop it alone).
pytestmark = pytest.mark.slow


@pytest.fixture
def world(tmp_path, monkeypatch):
    yield from kaggle_world(tmp_path, monkeypatch)


@pytest.fixture(params=[False, True], ids=["today", "flat"])
def layout_world(request, tmp_path, monkeypatch):
    """(a world whose kernels see their sources as Kaggle mounts them today, or flat; flat)"""
    for world in kaggle_world(tmp_path, monkeypatch, flat_input=request.param):
        yield world, request.param


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _competition_files(tmp_path, hidden_ids=("a", "b", "c", "d", "e", "f")):
    """`tinycomp`: kernels see two test ids; the rerun sees `hidden_ids`; labels are 1 except
    for e and f. Returns (data, solution, hidden)."""
    data = write_files(tmp_path / "comp" / "data",
                       {"sample_submission.csv": b"id,label\na,0\nb,0\n"})
    sample = "id,label\n" + "".join(f"{i},0\n" for i in hidden_ids)
    hidden = write_files(tmp_path / "comp" / "hidden", {"sample_submission.csv": sample.encode()})
    labels = "".join(f"{i},{0 if i in 'ef' else 1},{'Public' if i in 'abc' else 'Private'}\n"
                     for i in hidden_ids)
    solution = tmp_path / "comp" / "solution.csv"
    solution.write_text("id,label,Usage\n" + labels)
    return data, solution, hidden


def _competition(world, tmp_path):
    data, solution, hidden = _competition_files(tmp_path)
    add_competition(world.root, "tinycomp", data, solution, hidden)


def test_kaggle_cli_creates_a_dataset_and_a_version_with_every_byte_in_place(world, tmp_path):
    files = {"data.csv": b"a,b\n1,2\n", "weights.bin": bytes(range(256)) * 400}
    folder = dataset_folder(tmp_path / "ds", "my-dataset", files)

    created = world.kaggle("datasets", "create", "-p", str(folder), "-q")
    assert created.returncode == 0 and "being created" in created.stdout, created
    (folder / "weights.bin").write_bytes(b"v2" * 5000)
    versioned = world.kaggle("datasets", "version", "-p", str(folder), "-m", "second", "-q")
    assert versioned.returncode == 0 and "being created" in versioned.stdout, versioned

    status = world.kaggle("datasets", "status", f"{USER}/my-dataset", "--format", "json")
    assert json.loads(status.stdout) == {"status": "ready", "current_version_number": 2}
    listing = world.kaggle("datasets", "files", f"{USER}/my-dataset")
    assert "weights.bin" in listing.stdout and "10000" in listing.stdout
    record = json.loads(world.stored("datasets", USER, "my-dataset", "dataset.json").read_text())
    assert [{f["name"]: f["sha256"] for f in v["files"]} for v in record["versions"]] == [
        {name: _sha256(data) for name, data in files.items()},
        {"data.csv": _sha256(files["data.csv"]), "weights.bin": _sha256(b"v2" * 5000)}]
    assert world.stored("datasets", USER, "my-dataset", "2", "weights.bin").read_bytes() \
        == b"v2" * 5000


def test_kaggle_cli_refuses_to_create_a_dataset_twice_and_reports_a_missing_one(world, tmp_path):
    folder = dataset_folder(tmp_path / "ds", "twice-dataset", {"a.txt": b"a"})
    assert world.kaggle("datasets", "create", "-p", str(folder), "-q").returncode == 0
    again = world.kaggle("datasets", "create", "-p", str(folder), "-q")
    assert "already in use" in again.stdout     # the client's own exit-0 failure
    missing = world.kaggle("datasets", "status", f"{USER}/no-such-dataset")
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_kaggle_cli_pushed_kernel_runs_offline_with_its_sources_mounted(world, tmp_path):
    _competition(world, tmp_path)
    folder = dataset_folder(tmp_path / "ds", "extra-data", {"extra.txt": b"x"})
    assert world.kaggle("datasets", "create", "-p", str(folder), "-q").returncode == 0
    kernel = tiny_kernel(tmp_path / "k", "tiny-kernel", PREDICT_ONES,
                         dataset_sources=[f"{USER}/extra-data", f"{USER}/not-there"],
                         competition_sources=["tinycomp"])

    pushed = world.kaggle("kernels", "push", "-p", str(kernel))
    assert "version 1 successfully pushed" in pushed.stdout, pushed
    assert f"['{USER}/not-there']" in pushed.stdout      # dropped, and said so
    world.service.runner.wait_idle()
    status = world.kaggle("kernels", "status", f"{USER}/tiny-kernel")
    assert 'has status "KernelWorkerStatus.COMPLETE"' in status.stdout, status

    out = tmp_path / "out"
    world.kaggle("kernels", "output", f"{USER}/tiny-kernel", "-p", str(out))
    assert (out / "submission.csv").read_text() == "id,label\na,1\nb,1\n"
    log = json.loads((out / "tiny-kernel.log").read_text())
    assert log[0]["data"] == "inputs: ['extra-data', 'tinycomp']\n"

    pulled = world.kaggle("kernels", "pull", f"{USER}/tiny-kernel", "-p", str(tmp_path / "pull"),
                          "-m")
    assert pulled.returncode == 0, pulled
    assert (tmp_path / "pull" / "tiny-kernel.py").read_text() == PREDICT_ONES
    metadata = json.loads((tmp_path / "pull" / "kernel-metadata.json").read_text())
    assert metadata["dataset_sources"] == [f"{USER}/extra-data"]      # the dropped one is gone
    assert metadata["enable_internet"] is False


# Kernel B: every file under ../input, and what kernel A wrote, found by its slug.
LIST_INPUT = """\
import os
for folder, _, files in sorted(os.walk("../input", followlinks=True)):
    for name in sorted(files):
        print("file", os.path.relpath(os.path.join(folder, name), "../input"))
prep = [os.path.join(f, "prep.txt") for f in ("../input/prep-kernel",
                                               "../input/notebooks/tester/prep-kernel")]
print("read", *[open(p).read() for p in prep if os.path.exists(p)])
"""


def test_sources_are_mounted_as_kaggle_mounts_them_and_one_kernel_feeds_another(
        layout_world, tmp_path):
    world, flat = layout_world
    _competition(world, tmp_path)
    data = dataset_folder(tmp_path / "ds", "extra-data", {"extra.txt": b"x"})
    assert world.kaggle("datasets", "create", "-p", str(data), "-q").returncode == 0
    weights = write_files(tmp_path / "weights", {"w.bin": b"\x01" * 64})
    model = world.kernelpack("model", "push", str(weights), "--handle",
                             f"{USER}/tiny-model/pyTorch/default", "--wait")
    assert model.returncode == 0, model
    prep = tiny_kernel(tmp_path / "a", "prep-kernel", 'open("prep.txt", "w").write("from A")\n')
    assert "successfully pushed" in world.kaggle("kernels", "push", "-p", str(prep)).stdout
    world.service.runner.wait_idle()
    reader = tiny_kernel(tmp_path / "b", "reader-kernel", LIST_INPUT,
                         kernel_sources=[f"{USER}/prep-kernel"], competition_sources=["tinycomp"],
                         dataset_sources=[f"{USER}/extra-data"],
                         model_sources=[f"{USER}/tiny-model/pyTorch/default/1"])
    assert "successfully pushed" in world.kaggle("kernels", "push", "-p", str(reader)).stdout
    world.service.runner.wait_idle()

    log = world.kernelpack("kernel", "logs", f"{USER}/reader-kernel").stdout
    listed = sorted(line.split(" ", 1)[1] for line in log.splitlines() if line.startswith("file "))
    assert listed == (["extra-data/extra.txt", "prep-kernel/prep.txt",
                       "tiny-model/pytorch/default/1/w.bin", "tinycomp/sample_submission.csv"]
                      if flat else
                      ["competitions/tinycomp/sample_submission.csv",
                       "datasets/tester/extra-data/extra.txt",
                       "models/tester/tiny-model/pytorch/default/1/w.bin",
                       "notebooks/tester/prep-kernel/prep.txt"]), log
    assert "read from A" in log.splitlines()


def test_code_submission_reruns_on_the_hidden_test_set_and_is_scored(layout_world, tmp_path):
    world, flat = layout_world
    _competition(world, tmp_path)
    # The rerun's hidden test set goes where the run had the data, in either layout.
    body = PREDICT_ONES if flat else PREDICT_ONES.replace("../input/tinycomp/",
                                                          "../input/competitions/tinycomp/")
    kernel = tiny_kernel(tmp_path / "k", "tiny-kernel", body, competition_sources=["tinycomp"])
    assert world.kaggle("kernels", "push", "-p", str(kernel)).returncode == 0
    world.service.runner.wait_idle()

    submitted = world.kaggle("competitions", "submit", "tinycomp", "-k", f"{USER}/tiny-kernel",
                             "-v", "1", "-f", "submission.csv", "-m", "ones")
    assert submitted.returncode == 0 and "Successfully submitted" in submitted.stdout, submitted
    world.service.runner.wait_idle()
    listing = world.kaggle("competitions", "submissions", "tinycomp", "--format", "json")
    [row] = json.loads(listing.stdout)
    # The rerun saw all six hidden ids: a-c public, all right; d-f private, d right, e/f wrong.
    assert (row["publicScore"], row["privateScore"]) == ("1.00000", "0.33333"), row
    assert row["description"] == "ones"


def test_a_submission_whose_rerun_misses_test_ids_fails_with_the_reason(world, tmp_path):
    _competition(world, tmp_path)
    kernel = tiny_kernel(tmp_path / "k", "lazy-kernel",
                         'open("submission.csv", "w").write("id,label\\na,1\\n")\n',
                         competition_sources=["tinycomp"])
    world.kaggle("kernels", "push", "-p", str(kernel))
    world.service.runner.wait_idle()
    world.kaggle("competitions", "submit", "tinycomp", "-k", f"{USER}/lazy-kernel", "-v", "1",
                 "-f", "submission.csv", "-m", "lazy")
    world.service.runner.wait_idle()
    listing = world.kaggle("competitions", "submissions", "tinycomp", "--format", "json")
    [row] = json.loads(listing.stdout)
    assert row["status"] == "SubmissionStatus.ERROR"
    # The CLI shows no error text; GetSubmission carries it.
    failed = KaggleSession(world.url).submission(row["ref"])
    assert failed.error.startswith("submission submission.csv lacks 5 of 6 test ids"), failed


def test_state_survives_a_restart_and_an_interrupted_run_is_run_again(world, tmp_path):
    folder = dataset_folder(tmp_path / "ds", "kept-dataset", {"kept.bin": b"k" * 1000})
    assert world.kaggle("datasets", "create", "-p", str(folder), "-q").returncode == 0
    kernel = tiny_kernel(tmp_path / "k", "cut-kernel", 'open("done.txt", "w").write("1")\n')
    assert world.kaggle("kernels", "push", "-p", str(kernel)).returncode == 0
    world.service.stop()
    # As if the service had been killed mid-run: the version is still RUNNING on disk.
    record_path = world.stored("kernels", USER, "cut-kernel", "kernel.json")
    record = json.loads(record_path.read_text())
    record["versions"][0]["status"] = "RUNNING"
    record_path.write_text(json.dumps(record))
    shutil.rmtree(world.stored("kernels", USER, "cut-kernel", "1", "run"))

    with KaggleService(world.root) as restarted:
        listing = run_kaggle(world.home, world.tmp, restarted.url, "datasets", "files",
                             f"{USER}/kept-dataset")
        assert "kept.bin" in listing.stdout and "1000" in listing.stdout
        restarted.runner.wait_idle()
        status = run_kaggle(world.home, world.tmp, restarted.url, "kernels", "status",
                            f"{USER}/cut-kernel")
        assert "COMPLETE" in status.stdout, status
    assert world.stored("kernels", USER, "cut-kernel", "1", "run", "working",
                        "done.txt").read_text() == "1"


def test_serve_kaggle_command_serves_competitions_and_faults_until_interrupted(tmp_path):
    data, solution, hidden = _competition_files(tmp_path)
    home, tmp = kaggle_account(tmp_path)
    server = subprocess.Popen(
        [sys.executable, "-m", "kernelpack.cli", "serve-kaggle", "--root", str(tmp_path / "s"),
         "--port", "0", "--competition", f"tinycomp:{data}:{solution}:{hidden}",
         "--fault", "429:ListSubmissions", "--user", f"{USER}:{KEY}", "--flat-input"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = server.stdout.readline()
        url = banner.split(" at ")[1].split()[0]
        assert banner.startswith("local Kaggle service at http://127.0.0.1:"), banner
        limited = run_kaggle(home, tmp, url, "competitions", "submissions", "tinycomp")
        assert limited.returncode == 1 and "injected fault 429" in limited.stderr
        listed = run_kaggle(home, tmp, url, "competitions", "submissions", "tinycomp")
        assert listed.returncode == 0 and "No submissions found" in listed.stdout, listed
    finally:
        server.send_signal(signal.SIGINT)
        rest = server.communicate(timeout=30)[0]
    assert server.returncode == 0 and rest.rstrip().endswith("stopped")
    assert "kernel sources: input/SLUG, as Kaggle mounted them before (--flat-input)" in rest


def test_names_that_would_climb_out_of_the_state_folder_are_refused(world):
    # The client validates names itself, so this request is sent by hand.
    answer = requests.post(f"{world.url}/v1/datasets.DatasetApiService/GetDatasetStatus",
                           json={"ownerSlug": "..", "datasetSlug": "datasets"},
                           auth=(USER, KEY), timeout=10)
    assert answer.status_code == 400
    assert answer.json() == {"code": 400, "message": "invalid name '..': must be a plain file "
                                                     "or slug name"}


def test_the_services_state_is_owner_only_from_the_start(tmp_path):
    import stat

    from kernelpack.kaggle.service.store import Store

    root = tmp_path / "service"
    root.mkdir(mode=0o755)
    store = Store(root)
    store.write({"key": "secret"}, "signing.json")
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "signing.json").stat().st_mode) == 0o600
