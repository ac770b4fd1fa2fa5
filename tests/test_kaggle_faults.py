"""Injected faults against the real client: 429 with Retry-After, 503 and 500 mid-upload, a dropped
connection, a slow processing state. Nothing is lost: every byte arrives or the push fails."""

import hashlib
import json

import pytest
from kaggle_helpers import USER, dataset_folder, kaggle_world, tiny_kernel, write_files

from kernelpack.errors import KaggleError, KaggleServiceError
from kernelpack.kaggle._client_internals import client_resumes_uploads
from kernelpack.kaggle.service import Fault, parse_fault
from kernelpack.kaggle.session import KaggleSession

BIG = bytes(range(256)) * 400          # 102400 bytes


@pytest.fixture
def world(tmp_path, monkeypatch):
    yield from kaggle_world(tmp_path, monkeypatch)


@pytest.fixture
def slow_world(tmp_path, monkeypatch):
    yield from kaggle_world(tmp_path, monkeypatch, processing_seconds=2.5)


def _stored(world, slug: str) -> list[dict[str, str]]:
    record = json.loads(world.stored("datasets", USER, slug, "dataset.json").read_text())
    return [{f["name"]: f["sha256"] for f in v["files"]} for v in record["versions"]]


@pytest.mark.slow
def test_429_with_retry_after_is_retried_by_the_client_and_the_dataset_completes(world,
                                                                                  tmp_path):
    world.service.faults.add(Fault("429", "StartBlobUpload"))
    world.service.faults.add(Fault("429", "CreateDataset"))
    folder = dataset_folder(tmp_path / "ds", "limited-data", {"w.bin": BIG})
    created = world.kaggle("datasets", "create", "-p", str(folder), "-q")
    assert created.returncode == 0, created
    assert created.stderr.count("Will retry in 1.0 seconds") == 2     # Retry-After honoured
    assert _stored(world, "limited-data") == [{"w.bin": hashlib.sha256(BIG).hexdigest()}]
    assert world.service.faults.pending() == []


@pytest.mark.slow
def test_503_mid_upload_is_resumed_from_the_bytes_that_arrived(world, tmp_path):
    world.service.faults.add(Fault("503", "upload"))
    folder = dataset_folder(tmp_path / "ds", "resumed-data", {"w.bin": BIG})
    created = world.kaggle("datasets", "create", "-p", str(folder))
    assert created.returncode == 0, created
    half = len(BIG) // 2
    assert f"Already uploaded {half - 1} bytes. Will resume upload at {half}." in created.stdout
    assert _stored(world, "resumed-data") == [{"w.bin": hashlib.sha256(BIG).hexdigest()}]


@pytest.mark.slow
def test_a_failed_upload_fails_the_push_and_the_next_push_resumes_it(world, tmp_path):
    folder = write_files(tmp_path / "failed-data", {"w.bin": BIG})
    world.service.faults.add(Fault("500", "upload"))
    failed = world.kernelpack("dataset", "push", str(folder), "--wait")
    assert failed.returncode == 1, failed
    # kaggle 2.1.x cannot resume (its check never accepts the saved state): said so.
    resumes = client_resumes_uploads()
    again = "run the same push again to resume it" if resumes else (
        "run the same push again (this kaggle client cannot resume an upload: the file is sent "
        "again from its start)")
    assert failed.stderr == (f"kernelpack: error: {folder / 'w.bin'}: upload failed, so no "
                             f"version was created; {again}\n")
    assert not world.stored("datasets", USER, "failed-data").exists()

    if resumes:  # a new upload would hit this fault; resuming the old one never asks for one
        world.service.faults.add(Fault("400", "StartBlobUpload"))
    again = world.kernelpack("dataset", "push", str(folder), "--wait")
    assert again.returncode == 0, again
    assert _stored(world, "failed-data") == [{"w.bin": hashlib.sha256(BIG).hexdigest()}]
    if resumes:
        assert world.service.faults.pending() == [Fault("400", "StartBlobUpload")]


@pytest.mark.slow
def test_dropped_connections_are_retried_and_create_the_version_once(world, tmp_path):
    folder = write_files(tmp_path / "dropped-data", {"a.bin": b"a" * 10, "b.bin": BIG})
    world.service.faults.add(Fault("drop", "StartBlobUpload"))
    world.service.faults.add(Fault("drop", "upload"))          # after half of a file arrived
    world.service.faults.add(Fault("drop", "CreateDataset"))
    run = world.kernelpack("dataset", "push", str(folder), "--wait")
    assert run.returncode == 0, run
    assert _stored(world, "dropped-data") == [{"a.bin": hashlib.sha256(b"a" * 10).hexdigest(),
                                               "b.bin": hashlib.sha256(BIG).hexdigest()}]
    assert world.service.faults.pending() == []


@pytest.mark.slow
def test_429_on_a_call_the_client_does_not_retry_is_one_line_and_a_rerun_pushes(world,
                                                                                 tmp_path):
    kernel = tiny_kernel(tmp_path / "k", "limited-kernel", "print(1)\n")
    world.service.faults.add(Fault("429", "SaveKernel"))
    limited = world.kernelpack("kernel", "push", str(kernel))
    assert limited.returncode == 1 and len(limited.stderr.splitlines()) == 1
    assert "answered 429" in limited.stderr and "rate limited" in limited.stderr
    assert "version 1" in world.kernelpack("kernel", "push", str(kernel)).stdout
    # SaveKernel is not retried by the client: a dropped connection is reported, not hidden.
    world.service.faults.add(Fault("drop", "SaveKernel"))
    dropped = world.kernelpack("kernel", "push", str(kernel))
    assert dropped.returncode == 1
    assert "no answer from" in dropped.stderr and "(the connection was dropped)" in dropped.stderr
    # Status polls are retried by kernelpack itself.
    world.service.faults.add(Fault("429", "GetKernelSessionStatus"))
    world.service.runner.wait_idle()
    status = world.kernelpack("kernel", "status", f"{USER}/limited-kernel")
    assert status.stdout == f"{USER}/limited-kernel: COMPLETE\n", status


@pytest.mark.slow
def test_slow_processing_keeps_a_version_and_a_run_pending_until_done(slow_world, tmp_path):
    world = slow_world
    folder = write_files(tmp_path / "slow-data", {"s.bin": BIG})
    quick = world.kernelpack("dataset", "push", str(folder))
    assert "pass --wait" in quick.stdout
    assert world.kaggle("datasets", "status", f"{USER}/slow-data").stdout == "blobs_received"
    session = KaggleSession(world.url, poll_seconds=0.2)
    assert session.dataset_files(f"{USER}/slow-data") == {}      # nothing listed while processing
    session.wait_dataset(f"{USER}/slow-data", timeout=30)
    assert session.dataset_files(f"{USER}/slow-data") == {"s.bin": len(BIG)}

    kernel = tiny_kernel(tmp_path / "k", "slow-kernel", "print(1)\n")
    session.push_kernel(kernel)
    assert session.kernel_status(f"{USER}/slow-kernel") == ("QUEUED", None)
    assert session.wait_kernel(f"{USER}/slow-kernel", timeout=30) == "COMPLETE"


@pytest.mark.slow
def test_waiting_on_a_version_that_another_push_replaced_fails_instead_of_reporting_it(
        slow_world, tmp_path):
    session = KaggleSession(slow_world.url, poll_seconds=0.2)
    ours = session.push_kernel(tiny_kernel(tmp_path / "ours", "shared-kernel", "print(1)\n"))
    theirs = session.push_kernel(tiny_kernel(tmp_path / "theirs", "shared-kernel",
                                             "print(2)\n"))
    assert (ours.version, theirs.version) == (1, 2)
    with pytest.raises(KaggleError, match="version 2 was pushed while version 1 ran"):
        session.wait_kernel(f"{USER}/shared-kernel", timeout=30, version=1)
    assert session.wait_kernel(f"{USER}/shared-kernel", timeout=30, version=2) == "COMPLETE"


@pytest.mark.slow
def test_an_unreachable_service_is_a_one_line_error(world, tmp_path):
    run = world.kernelpack("kernel", "status", f"{USER}/x-kernel", "--kaggle-url",
                           "http://127.0.0.1:9", url=False)
    assert run.returncode == 1 and len(run.stderr.splitlines()) == 1
    assert "no answer from http://127.0.0.1:9 (connection refused)" in run.stderr


@pytest.mark.parametrize("spec, problem", [("429", "expected KIND:TARGET"),
                                           ("200:upload", "HTTP error status"),
                                           ("drop:upload:0", "positive integer")])
def test_bad_fault_specs_are_refused_naming_the_problem(spec, problem):
    with pytest.raises(KaggleServiceError, match=problem):
        parse_fault(spec)
