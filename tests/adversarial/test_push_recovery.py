"""Dataset pushes that went wrong before, and the push after them: resume state an interrupted
push left for an upload the service no longer takes, two pushes to one dataset at once, and a
dataset id that is not OWNER/slug. Each says what happened, or recovers, and never leaves behind
what would fail every later push."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from kaggle_helpers import USER, kaggle_world, write_files

from kernelpack.errors import KernelpackError
from kernelpack.kaggle.datasets import MANIFEST_FILE
from kernelpack.kaggle.service import Fault
from kernelpack.kaggle.session import KaggleSession
from kernelpack.metadata import DATASET_METADATA, is_owner_slug

pytestmark = pytest.mark.slow   # every test starts the local Kaggle service

# The world (one service) is shared by a test's examples; each example uses slugs of its own.
def shared_world(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def world(tmp_path, monkeypatch):
    yield from kaggle_world(tmp_path, monkeypatch)


def _versions(world, slug: str) -> list[set[str]]:
    record = json.loads(world.stored("datasets", USER, slug, "dataset.json").read_text())
    return [{f["name"] for f in version["files"]} for version in record["versions"]]


def _resume_files(world) -> list[Path]:
    folder = world.tmp / ".kaggle" / "uploads"
    return sorted(folder.iterdir()) if folder.is_dir() else []


_EXAMPLES = iter(range(1_000_000))


@shared_world(4)
@given(interrupted=st.sampled_from(["create refused", "upload cut"]),
       sizes=st.lists(st.sampled_from([1, 1000, 150_000]), min_size=1, max_size=3))
def test_resume_state_for_an_upload_the_service_forgot_is_dropped_and_the_push_goes_on(
        world, tmp_path, interrupted, sizes):
    slug = f"stale-data-{next(_EXAMPLES)}"
    folder = write_files(tmp_path / slug, {f"f{i}.bin": bytes([i]) * size
                                           for i, size in enumerate(sizes)})
    # A push cut off between its upload and its create, or half-way through an upload: the
    # client keeps its resume state for the next push.
    world.service.faults.add(Fault("500", "CreateDataset" if interrupted == "create refused"
                                   else "upload"))
    assert world.kernelpack("dataset", "push", str(folder)).returncode == 1
    assert _resume_files(world)
    # Then the service forgets the upload (it sweeps unclaimed uploads after a day; another
    # service never knew it): the next upload anyone starts sweeps it now.
    world.service.blobs.upload_seconds = 0
    time.sleep(0.05)
    other = write_files(tmp_path / f"other-{slug}", {"o.bin": b"o"})
    assert world.kernelpack("dataset", "push", str(other)).returncode == 0
    world.service.blobs.upload_seconds = 24 * 3600
    # The next push of the folder uploads afresh instead of failing on the stale state forever.
    again = world.kernelpack("dataset", "push", str(folder), "--wait")
    assert again.returncode == 0, again
    assert _versions(world, slug) == [{f"f{i}.bin" for i in range(len(sizes))}]
    assert _resume_files(world) == []


def test_two_pushes_to_one_dataset_at_once_each_verify_their_own_version(world, tmp_path,
                                                                         monkeypatch):
    base = write_files(tmp_path / "base" / "raced-data", {"base.bin": b"base"})
    KaggleSession(world.url).push_dataset(base, wait=True)
    # Both create their version before either checks what arrived: the race, made certain.
    both_created = threading.Barrier(2, timeout=30)
    wait = KaggleSession.wait_dataset

    def wait_for_both(self, ref, timeout):
        both_created.wait()
        return wait(self, ref, timeout)

    monkeypatch.setattr(KaggleSession, "wait_dataset", wait_for_both)
    outcomes = {}

    def push(side: str, delay: float) -> None:
        folder = write_files(tmp_path / side / "raced-data", {f"{side}.bin": side.encode() * 50})
        time.sleep(delay)     # a creates version 2, b version 3
        try:
            outcomes[side] = KaggleSession(world.url).push_dataset(folder, wait=True)
        except KernelpackError as exc:
            outcomes[side] = exc

    threads = [threading.Thread(target=push, args=side) for side in (("a", 0), ("b", 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # The older push used to fail, claiming a.bin was missing (it checked the newest version).
    assert {side: (push.version, push.verified) for side, push in outcomes.items()} == \
        {"a": (2, True), "b": (3, True)}, outcomes
    assert _versions(world, "raced-data") == [{"base.bin"}, {"a.bin"}, {"b.bin"}]
    for side, version in (("a", 2), ("b", 3)):
        manifest = json.loads((tmp_path / side / "raced-data" / MANIFEST_FILE).read_text())
        assert manifest["version"] == version


def test_a_version_that_lacks_a_file_is_still_named(world, tmp_path, monkeypatch):
    folder = write_files(tmp_path / "short-data", {"a.bin": b"a" * 10})
    session = KaggleSession(world.url)
    session.push_dataset(folder, wait=True)
    (folder / "b.bin").write_bytes(b"b")
    # The service lists version 2 without b.bin, as if it never arrived.
    files = KaggleSession.dataset_files
    monkeypatch.setattr(KaggleSession, "dataset_files",
                        lambda self, ref: {k: v for k, v in files(self, ref).items()
                                           if k != "b.bin"})
    with pytest.raises(KernelpackError, match=r"lacks or truncates b.bin \(missing, expected 1\)"):
        session.push_dataset(folder, wait=True)


@shared_world(25)
@given(dataset_id=st.one_of(
    st.sampled_from(["x", "a/", "/b", "a/B", "a/b c", "a/b/c", "../x", "a/..", "a/b_c", " a/b",
                     "a/-"]),
    st.text(max_size=20)))
def test_a_dataset_id_that_is_not_owner_slug_is_one_line_and_writes_nothing(world, tmp_path,
                                                                           dataset_id):
    assume(not is_owner_slug(dataset_id))
    folder = write_files(tmp_path / "id-data", {"d.bin": b"d"})
    refused = world.kernelpack("dataset", "push", str(folder), "--id", dataset_id)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert not (folder / DATASET_METADATA).exists()     # it broke every later push
    assert not world.stored("datasets").exists()


def test_files_a_create_never_recorded_do_not_show_up_in_the_next_version(world, tmp_path,
                                                                          monkeypatch):
    from kernelpack.kaggle.service.store import Store

    folder = write_files(tmp_path / "crash-data", {"a.bin": b"a"})
    assert world.kernelpack("dataset", "push", str(folder), "--wait").returncode == 0
    # The service claims the uploads of version 2, then cannot write its record (a full disk;
    # a service killed at that moment leaves the same).
    (folder / "b.bin").write_bytes(b"b")
    write = Store.write

    def full_disk_for_datasets(self, data, *parts):
        if parts[-1] == "dataset.json":
            raise OSError(28, "No space left on device")
        return write(self, data, *parts)

    monkeypatch.setattr(Store, "write", full_disk_for_datasets)
    assert world.kernelpack("dataset", "push", str(folder)).returncode == 1
    assert world.stored("datasets", USER, "crash-data", "2", "b.bin").is_file()
    monkeypatch.setattr(Store, "write", write)
    (folder / "b.bin").unlink()
    (folder / "c.bin").write_bytes(b"c")
    again = world.kernelpack("dataset", "push", str(folder), "--wait")
    assert again.returncode == 0, again
    assert _versions(world, "crash-data") == [{"a.bin"}, {"a.bin", "c.bin"}]
    # What a kernel would see mounted: only this version's files.
    assert sorted(p.name for p in world.stored("datasets", USER, "crash-data", "2").iterdir()) \
        == ["a.bin", "c.bin"]
