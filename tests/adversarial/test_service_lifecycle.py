"""Concurrency and crashes on the local service: racing pushes of one new dataset, uploads nobody
claims, and stopping `serve-kaggle` (Ctrl-C, SIGTERM, or killed) with a kernel still running."""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from kaggle_helpers import (
    KEY,
    USER,
    kaggle_account,
    kaggle_world,
    run_kaggle,
    tiny_kernel,
    write_files,
)

from kernelpack.cli import main
from kernelpack.errors import KernelpackError
from kernelpack.kaggle.service import Fault, add_competition
from kernelpack.kaggle.service.sources import Sources
from kernelpack.kaggle.session import KaggleSession


@pytest.fixture
def world(tmp_path, monkeypatch):
    yield from kaggle_world(tmp_path, monkeypatch)


def _versions(world, slug: str) -> list[dict[str, str]]:
    record = json.loads(world.stored("datasets", USER, slug, "dataset.json").read_text())
    return [{f["name"]: f["sha256"][:8] for f in v["files"]} for v in record["versions"]]


@pytest.mark.slow
def test_two_racing_pushes_of_one_new_dataset_lose_nothing_silently(world, tmp_path,
                                                                    monkeypatch):
    # Both pushes ask "does it exist?" before either creates it: the race, made certain.
    both_asked = threading.Barrier(2, timeout=30)
    exists = KaggleSession.dataset_exists

    def exists_then_wait(self, ref):
        answer = exists(self, ref)
        both_asked.wait()
        return answer

    monkeypatch.setattr(KaggleSession, "dataset_exists", exists_then_wait)
    outcomes = {}

    def push(side: str) -> None:
        folder = write_files(tmp_path / side / "shared-data", {f"{side}.bin": side.encode() * 99})
        try:
            outcomes[side] = KaggleSession(world.url).push_dataset(folder, wait=True).version
        except KernelpackError as exc:
            outcomes[side] = str(exc)

    threads = [threading.Thread(target=push, args=(side,)) for side in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    [won] = [side for side, outcome in outcomes.items() if outcome == 1]
    [lost] = {"a", "b"} - {won}
    # The loser is told, in one line, that another push created the dataset first.
    assert "already in use by a dataset (another push created it first); push again to add " \
           "your files as a new version" in outcomes[lost]
    assert len(_versions(world, "shared-data")) == 1
    assert set(_versions(world, "shared-data")[0]) == {f"{won}.bin"}
    # Its upload is not left behind, and pushing again lands its files as version 2.
    assert list(world.stored("blobs").iterdir()) == []
    monkeypatch.setattr(KaggleSession, "dataset_exists", exists)
    again = KaggleSession(world.url).push_dataset(tmp_path / lost / "shared-data", wait=True)
    assert again.version == 2 and set(_versions(world, "shared-data")[1]) == {f"{lost}.bin"}


@pytest.mark.slow
def test_uploads_nobody_claims_are_deleted_after_their_time(world, tmp_path):
    folder = write_files(tmp_path / "orphan-data", {"w.bin": b"w" * 1000})
    # The upload arrives, then the create is refused (the service answers 500 for it).
    world.service.faults.add(Fault("500", "CreateDataset"))
    refused = world.kernelpack("dataset", "push", str(folder))
    assert refused.returncode == 1 and world.service.faults.pending() == []
    assert len(list(world.stored("blobs").glob("*.part"))) == 1
    world.service.blobs.upload_seconds = 0.5
    time.sleep(1)
    # The next upload that starts sweeps it away; uploads in use are untouched.
    fresh = write_files(tmp_path / "fresh-data", {"f.bin": b"f"})
    assert world.kernelpack("dataset", "push", str(fresh), "--wait").returncode == 0
    assert list(world.stored("blobs").iterdir()) == []
    assert _versions(world, "fresh-data") and not world.stored("datasets", USER,
                                                                 "orphan-data").exists()


@pytest.mark.slow
def test_a_run_that_breaks_the_service_is_an_error_and_the_queue_goes_on(world, tmp_path,
                                                                          monkeypatch):
    # A fault no real input makes: reading the run's sources raises what nothing expects.
    resolve = Sources.mounts
    calls = []

    def breaks_once(self, version, user):
        calls.append(version["number"])
        if len(calls) == 1:
            raise RuntimeError("disk went away")
        return resolve(self, version, user)

    monkeypatch.setattr(Sources, "mounts", breaks_once)
    for slug in ("first-kernel", "second-kernel"):
        kernel = tiny_kernel(tmp_path / slug, slug, "print('ran')\n")
        assert world.kernelpack("kernel", "push", str(kernel)).returncode == 0
    session = KaggleSession(world.url)   # a stopped queue shows as a timeout here, not a hang
    assert session.wait_kernel(f"{USER}/second-kernel", timeout=60) == "COMPLETE"
    status, message = session.kernel_status(f"{USER}/first-kernel")
    assert status == "ERROR" and message == ("the service could not run it: disk went away")


def _kernel_processes(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def _run_state(root: Path) -> str:
    """What the service recorded of the run, for a failure message."""
    folder = root / "kernels" / USER / "sleepy-kernel"
    record = folder / "kernel.json"
    log = folder / "1" / "run" / "kernel.log"
    return "; ".join(f"{path.name}: {path.read_text(errors='replace')[-2000:]}"
                     if path.is_file() else f"{path.name}: missing" for path in (record, log))


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL],
                         ids=lambda number: number.name)
def test_stopping_serve_kaggle_stops_the_kernels_it_started(tmp_path, stop):
    home, tmp = kaggle_account(tmp_path)
    root = tmp_path / f"state-{stop.name}"
    server = subprocess.Popen(
        [sys.executable, "-m", "kernelpack.cli", "serve-kaggle", "--root", str(root), "--port",
         "0", "--user", f"{USER}:{KEY}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
    try:
        url = server.stdout.readline().split(" at ")[1].split()[0]
        kernel = tiny_kernel(tmp_path / "k", "sleepy-kernel", "import time\ntime.sleep(120)\n")
        pushed = run_kaggle(home, tmp, url, "kernels", "push", "-p", str(kernel))
        # The client exits 0 on an error the service answers with: read what it printed too.
        assert pushed.returncode == 0 and "error" not in pushed.stdout.lower(), pushed
        marker = f"{root}/kernels/{USER}/sleepy-kernel/1/run/src/kernel.py"
        deadline = time.monotonic() + 90
        while not _kernel_processes(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _kernel_processes(marker):
            server.kill()
            pytest.fail(f"the kernel never started; the service printed "
                        f"{server.communicate()[1][-2000:]!r}; {_run_state(root)}")
        server.send_signal(stop)
        server.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _kernel_processes(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _kernel_processes(marker) == []
    finally:
        server.kill()
        server.wait()
        for pid in _kernel_processes(str(root / "kernels")):
            os.kill(pid, signal.SIGKILL)
    record = json.loads((root / "kernels" / USER / "sleepy-kernel" / "kernel.json").read_text())
    assert record["versions"][0]["status"] == "RUNNING"       # run again at the next start


@pytest.mark.parametrize("args, problem", [
    (["--competition", "digits"], "competition"), (["--competition", "digits:data"], "competition"),
    (["--competition", "a:b:c:d:e"], "competition"), (["--competition", "::"], "competition"),
    (["--competition", "../x:d:s.csv"], "competition"), (["--user", "name-only"], "--user"),
    (["--user", ":key"], "--user"), (["--token", "=user"], "--token"),
    (["--processing-seconds", "nan"], "--processing-seconds"), (["--port", "70000"], "--port"),
    (["--root-is-a-file"], "--root")])
def test_a_malformed_serve_kaggle_option_is_one_line(tmp_path, args, problem):
    root = tmp_path / "s"
    if args == ["--root-is-a-file"]:
        root.write_text("not a folder")
        args = []
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["serve-kaggle", "--root", str(root), "--port", "0", *args])
    assert code == 1 and len(err.getvalue().splitlines()) == 1, err.getvalue()
    assert err.getvalue().startswith("kernelpack: error: ") and problem in err.getvalue()


@pytest.mark.slow
def test_without_namespaces_a_run_falls_back_to_linked_sources(world, tmp_path, monkeypatch):
    from kernelpack.kaggle.service import run_queue

    monkeypatch.setattr(run_queue, "isolation", lambda: (False, "NOT isolated (no unshare)"))
    data = write_files(tmp_path / "fallback-data", {"d.txt": b"data"})
    KaggleSession(world.url).push_dataset(data, wait=True)
    kernel = tiny_kernel(tmp_path / "k", "fallback-kernel",
                         'print(open("../input/fallback-data/d.txt").read())\n',
                         dataset_sources=[f"{USER}/fallback-data"])
    assert KaggleSession(world.url).push_kernel(kernel, wait=True).status == "COMPLETE"
    assert world.kernelpack("kernel", "logs", f"{USER}/fallback-kernel").stdout == "data\n"
    assert world.stored("kernels", USER, "fallback-kernel", "1", "input",
                        "fallback-data").is_symlink()


@pytest.mark.slow
def test_an_output_link_is_neither_listed_nor_served_nor_scored(world, tmp_path):
    labels = tmp_path / "solution.csv"
    labels.write_text("id,label\na,1\n")
    data = write_files(tmp_path / "data", {"sample_submission.csv": b"id,label\na,0\n"})
    add_competition(world.root, "tinycomp", data, labels)
    # Where the held-back labels are kept, as a kernel outside a container could find them.
    kept = world.stored("competitions", "tinycomp", "solution.csv")
    kernel = tiny_kernel(tmp_path / "k", "link-kernel",
                         f'import os\nos.symlink({str(kept)!r}, "submission.csv")\n'
                         'os.symlink("/etc/hostname", "host.txt")\n',
                         competition_sources=["tinycomp"])
    KaggleSession(world.url).push_kernel(kernel, wait=True)
    out = tmp_path / "out"
    assert world.kernelpack("kernel", "output", f"{USER}/link-kernel", "-p", str(out)) \
        .returncode == 0
    assert not (out / "submission.csv").exists() and not (out / "host.txt").exists()
    submitted = world.kernelpack("submit", "tinycomp", "--kernel", f"{USER}/link-kernel")
    assert submitted.returncode == 1 and "did not write submission.csv" in submitted.stderr
