"""A kernel run on the local service sees what a Kaggle session sees and nothing else: its own
sources read-only under ../input, a fresh working folder, no service state (other users' files,
held-back labels, keys), no host files outside the system, no other processes."""

import json

import pytest
from kaggle_helpers import USER, dataset_folder, kaggle_world, tiny_kernel, write_files

from kernelpack.kaggle.service import add_competition
from kernelpack.kaggle.service.run_queue import isolation
from kernelpack.kaggle.session import KaggleSession

pytestmark = [pytest.mark.slow,  # a kernel run by the local Kaggle service
              pytest.mark.skipif(not isolation()[0],
                                 reason="no namespaces here: " + isolation()[1])]

OTHER, OTHER_KEY = "other-user", "other-key"

# Tries every path it is given, walks up from its working folder, looks at the process table,
# and writes what it found into its own output.
SNOOP = """\
import json, os, sys
found = {"start": sorted(os.listdir(".")), "readable": [], "written": []}
for path in PATHS:
    try:
        with open(path, "rb") as stream:
            stream.read(1)
        found["readable"].append(path)
    except OSError:
        pass
# Everything from / down but the system and the Python installation.
system = {"/proc", "/sys", "/usr", "/etc", "/dev"} | {
    os.path.realpath(p) for p in (sys.prefix, sys.base_prefix)}
found["walked"] = []
for top, folders, files in os.walk("/"):
    folders[:] = [f for f in folders if os.path.join(top, f) not in system]
    found["walked"] += [os.path.join(top, name) for name in files]
for path in ["../input/my-data/mine.txt", "../input/my-data/new.txt"]:
    try:
        with open(path, "a") as stream:
            stream.write("x")
        found["written"].append(path)
    except OSError:
        pass
# The log the service reads back, and the folder around the working folder, are not its own.
for name, change in [("../kernel.log", lambda: os.remove("../kernel.log")),
                     ("../link.log", lambda: os.symlink("/etc/hostname", "../link.log")),
                     ("../src/kernel.py", lambda: open("../src/kernel.py", "a").write("x"))]:
    try:
        change()
        found["written"].append(name)
    except OSError:
        pass
found["mine"] = open("../input/my-data/mine.txt").read()
found["processes"] = [pid for pid in os.listdir("/proc") if pid.isdigit()]
json.dump(found, open("found.json", "w"))
"""


@pytest.fixture
def world(tmp_path, monkeypatch):
    yield from kaggle_world(tmp_path, monkeypatch)


def test_a_kernel_reaches_only_its_own_sources_read_only(world, tmp_path, monkeypatch):
    # Another user's private dataset and private kernel (with an embedded key), a competition
    # with held-back labels, this user's own credentials: all on this machine.
    world.service.add_user(OTHER, OTHER_KEY)
    labels = tmp_path / "comp" / "solution.csv"
    data = write_files(tmp_path / "comp" / "data", {"sample_submission.csv": b"id,label\na,0\n"})
    labels.write_text("id,label\na,7\n")
    add_competition(world.root, "tinycomp", data, labels)
    mine = dataset_folder(tmp_path / "mine", "my-data", {"mine.txt": b"my own data"})
    KaggleSession(world.url).push_dataset(mine, wait=True)
    monkeypatch.setenv("KAGGLE_USERNAME", OTHER)
    monkeypatch.setenv("KAGGLE_KEY", OTHER_KEY)
    theirs = write_files(tmp_path / "theirs" / "their-data", {"secret.txt": b"their secret"})
    other = KaggleSession(world.url)
    other.push_dataset(theirs, wait=True)
    their_kernel = tiny_kernel(tmp_path / "their-kernel", "their-kernel",
                               "KEY = 'their-decryption-key'\n", id=f"{OTHER}/their-kernel")
    other.push_kernel(their_kernel, wait=True)
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")

    secrets = [world.stored("datasets", OTHER, "their-data", "1", "secret.txt"),
               world.stored("kernels", OTHER, "their-kernel", "1", "kernel.py"),
               world.stored("competitions", "tinycomp", "solution.csv"),
               world.stored("users.json"), world.stored("signing.json"), labels,
               world.home / "config" / "kaggle.json"]
    assert all(path.is_file() for path in secrets[:3])
    kernel = tiny_kernel(tmp_path / "k", "snoop-kernel",
                         f"PATHS = {[str(p) for p in secrets]!r}\n" + SNOOP,
                         dataset_sources=[f"{USER}/my-data"], competition_sources=["tinycomp"])
    KaggleSession(world.url).push_kernel(kernel, wait=True)

    found = json.loads(world.stored("kernels", USER, "snoop-kernel", "1", "run", "working",
                                    "found.json").read_text())
    assert found["start"] == []                      # a fresh working folder
    assert found["readable"] == []                   # no state, no labels, no credentials
    assert found["mine"] == "my own data"            # its own source, mounted
    assert found["written"] == []                    # read-only
    assert (mine / "mine.txt").read_bytes() == b"my own data"
    # Walking up finds only its own run: its source, the competition's data, its own files.
    leaked = [path for path in found["walked"]
              if not any(part in path for part in ("/input/my-data/", "/input/tinycomp/",
                                                   "/snoop-kernel/1/run/"))]
    assert leaked == []
    assert len(found["processes"]) <= 3              # its own pid namespace


FILL_SCRATCH = """\
import errno, json
found = {}
for folder in ("/tmp", "/dev/shm"):
    written = 0
    try:
        with open(folder + "/fill", "wb") as stream:
            for _ in range(64):
                stream.write(b"x" * (1 << 20))
                stream.flush()
                written += 1 << 20
        found[folder] = "no limit"
    except OSError as exc:
        found[folder] = errno.errorcode.get(exc.errno, str(exc.errno))
json.dump(found, open("found.json", "w"))
"""


def test_a_runs_tmp_and_shm_are_capped_so_filling_them_is_a_full_disk_not_the_hosts_memory(
        world, tmp_path):
    world.service.runner.scratch_bytes = 8 << 20  # 8 MiB; the kernel writes up to 64 MiB
    kernel = tiny_kernel(tmp_path / "k", "fill-kernel", FILL_SCRATCH)
    KaggleSession(world.url).push_kernel(kernel, wait=True)
    found = json.loads(world.stored("kernels", USER, "fill-kernel", "1", "run", "working",
                                    "found.json").read_text())
    assert found == {"/tmp": "ENOSPC", "/dev/shm": "ENOSPC"}
