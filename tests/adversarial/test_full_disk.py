"""A full disk, for real (a small tmpfs, see small_disk.py): run-local says so in one line and
leaves nothing cut short; a kernel that fills the local service's disk ends as ERROR with the
reason, and the runs after it go on."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kaggle_helpers import KEY, USER, kaggle_account, tiny_kernel
from small_disk import kernelpack_on_small_disk, on_small_disk

from kernelpack.errors import KaggleError

pytestmark = pytest.mark.slow   # each case starts kernelpack in a mount namespace of its own

# A kernel left blocked on its output pipe (run-local stopped reading when its log could not be
# written) fails its case at this budget instead of hanging the suite.
BUDGET = 60
# Where a kernel may fill the disk from, and what it does once the disk is full.
PLACES = {"working": '"big.bin"', "nested": '"out/deep/big.bin"',
          "temp": 'os.path.join(tempfile.gettempdir(), "big.bin")',
          "submission": '"submission.csv"'}
AFTERWARDS = {
    "raises": "raise",
    "exits 0": "sys.exit(0)",
    "exits 3": "sys.exit(3)",
    # More output than a pipe holds: run-local must keep reading it with its log unwritable.
    "prints a lot": "print(('after the disk filled ' * 8 + '\\n') * 4000); sys.exit(0)",
}


def _filling_kernel(folder: Path, place: str, chunk: int, afterwards: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kernel.py").write_text(textwrap.dedent(f"""\
        import os, sys, tempfile
        os.makedirs("out/deep", exist_ok=True)
        print("filling", flush=True)
        try:
            with open({PLACES[place]}, "w") as out:
                out.write("id,label\\n")
                while True:
                    out.write("row,{'1' * 8}\\n" * {chunk // 16})
        except OSError:
            {AFTERWARDS[afterwards]}
        """))
    return folder


def _input(folder: Path) -> Path:
    (folder / "comp").mkdir(parents=True, exist_ok=True)
    (folder / "comp" / "labels.csv").write_text("id,label\na,1\n")
    return folder


def _one_line(done: dict, *fragments: str) -> str:
    assert done["code"] == 1, done
    assert "Traceback" not in done["err"], done["err"]
    lines = done["err"].strip().splitlines()
    assert len(lines) == 1, lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(place=st.sampled_from(sorted(PLACES)), chunk=st.sampled_from([1 << 10, 1 << 16, 1 << 20]),
       afterwards=st.sampled_from(sorted(AFTERWARDS)))
def test_a_kernel_that_fills_the_disk_under_root_is_one_line_and_leaves_nothing_cut_short(
        tmp_path, place, chunk, afterwards):
    case = tmp_path / f"{place}-{chunk}-{afterwards.replace(' ', '-')}"
    kernel, inputs = _filling_kernel(case / "k", place, chunk, afterwards), _input(case / "in")
    disk = case / "disk"
    done = kernelpack_on_small_disk(disk, "3m", "run-local", kernel, "--input", inputs,
                                    "--root", disk / "sandbox", "--budget", BUDGET)
    _one_line(done, f"--root {disk / 'sandbox'}", "the disk filled up while the kernel ran",
              "was removed", "kernel.log")
    # Nothing the kernel wrote is left to be mistaken for a whole file; the log says why.
    assert sorted(done["files"]) == ["sandbox/.kernelpack-sandbox", "sandbox/kernel.log",
                                     "sandbox/src/kernel.py"], done["files"]
    assert done["free"] > 1 << 20
    assert "  | filling" in done["out"] and "run-local: --root" in done["out"]


def test_a_kernel_the_disk_cannot_hold_is_refused_before_it_runs(tmp_path):
    kernel, inputs = tmp_path / "k", _input(tmp_path / "in")
    kernel.mkdir()
    # Bigger than the disk: a half-copied kernel.py must never run.
    (kernel / "kernel.py").write_text(f"X = {'1' * (3 << 20)!r}\nopen('ran', 'w')\n")
    disk = tmp_path / "disk"
    done = kernelpack_on_small_disk(disk, "2m", "run-local", kernel, "--input", inputs,
                                    "--root", disk / "sandbox", "--budget", BUDGET)
    _one_line(done, f"--root {disk / 'sandbox'}", "No space left on device",
              "nothing was run and the half-made sandbox was removed")
    assert done["files"] == {}


def test_a_kernel_that_fits_still_runs_on_a_small_disk(tmp_path):
    kernel = tiny_kernel(tmp_path / "k", "fits-kernel",
                         'open("submission.csv", "w").write("id,label\\na,1\\n")\n')
    disk = tmp_path / "disk"
    done = kernelpack_on_small_disk(disk, "3m", "run-local", kernel, "--input",
                                    _input(tmp_path / "in"), "--root", disk / "sandbox",
                                    "--budget", BUDGET)
    assert done["code"] == 0 and "submission written" in done["out"], done
    assert done["files"]["sandbox/working/submission.csv"] == len("id,label\na,1\n")


# The local service on a small disk; `isolated` False runs kernels without a container, as on a
# machine without namespaces (they can then write anywhere the service can).
_SERVICE = """\
import sys
from kernelpack.kaggle.service import KaggleService, run_queue
if sys.argv[2] == "not-isolated":
    run_queue.isolation = lambda: (False, "NOT isolated (test)")
with KaggleService(sys.argv[1], users={sys.argv[3]: sys.argv[4]}, flat_input=True) as service:
    print(service.url, flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def small_service(tmp_path, monkeypatch):
    """Yields start(isolated): a service on a 24 MiB disk, and its URL."""
    home, tmp = kaggle_account(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))   # the client's upload resume state
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KERNELPACK_KAGGLE_URL",
                 "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / "config"))
    started = []

    def start(isolated: bool) -> str:
        disk = tmp_path / "disk"
        server = subprocess.Popen(
            on_small_disk(disk, "24m", [sys.executable, "-c", _SERVICE, str(disk / "state"),
                                        "isolated" if isolated else "not-isolated", USER,
                                        KEY]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
        started.append(server)
        url = server.stdout.readline().strip()
        assert url.startswith("http://"), server.stderr.read()
        return url

    yield start
    for server in started:
        server.kill()
        server.wait()


def _session(url: str):
    from kernelpack.kaggle.session import KaggleSession

    return KaggleSession(url, poll_seconds=0.5)


FILL = """\
import os
os.makedirs("out", exist_ok=True)
with open("out/big.bin", "wb") as out:
    while True:
        out.write(b"x" * (1 << 20))
"""


def test_a_service_kernel_that_fills_the_disk_ends_as_error_and_the_queue_goes_on(
        small_service, tmp_path):
    url = small_service(isolated=True)
    session = _session(url)
    filler = tiny_kernel(tmp_path / "filler", "filler-kernel", FILL)
    with pytest.raises(KaggleError) as failed:
        session.push_kernel(filler, wait=True, timeout=120)   # stayed RUNNING forever
    assert "the run ended ERROR" in str(failed.value)
    assert "the disk filled up while the kernel ran" in str(failed.value)
    got = session.kernel_output(f"{USER}/filler-kernel", tmp_path / "got")
    assert [path.name for path in got] == ["filler-kernel.log"]     # no output file, only the log
    assert "No space left on device" in session.kernel_logs(f"{USER}/filler-kernel")
    # Its outputs were removed, so the disk has room for the next run.
    after = tiny_kernel(tmp_path / "after", "after-kernel", "print('ran')\n")
    assert session.push_kernel(after, wait=True, timeout=120).status == "COMPLETE"


def test_a_run_whose_status_cannot_be_written_still_ends_as_error(small_service, tmp_path):
    # Without a container a kernel can fill the disk outside its own folder, where run-local
    # does not clean up: the service's record of the run cannot be written afterwards.
    url = small_service(isolated=False)
    session = _session(url)
    filler = tiny_kernel(tmp_path / "filler", "outside-kernel",
                         FILL.replace('"out/big.bin"', '"../../../outside.bin"'))
    with pytest.raises(KaggleError) as failed:
        session.push_kernel(filler, wait=True, timeout=120)
    assert "the run ended ERROR" in str(failed.value)
    assert "the disk filled up while the kernel ran" in str(failed.value)
    assert session.kernel_status(f"{USER}/outside-kernel")[0] == "ERROR"
