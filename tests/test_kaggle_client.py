"""kernelpack's Kaggle commands (the real KaggleApi in-process, sent to the local service with
--kaggle-url or KERNELPACK_KAGGLE_URL): dataset push, kernel push/status/logs/output, submit."""

import hashlib
import json

import pytest
from kaggle_helpers import (
    PREDICT_ONES,
    USER,
    dataset_folder,
    kaggle_world,
    tiny_kernel,
    write_files,
)

from kernelpack.config import KernelSection
from kernelpack.errors import KaggleAuthError
from kernelpack.kaggle.datasets import MANIFEST_FILE
from kernelpack.kaggle.service import add_competition
from kernelpack.kaggle.session import KaggleSession
from kernelpack.kernel.build import KEY_MARKER, build_kernel, kernel_metadata
from kernelpack.metadata import dataset_metadata, slug_of, title_of


@pytest.fixture
def world(tmp_path, monkeypatch):
    yield from kaggle_world(tmp_path, monkeypatch)


def _stored_digests(world, slug: str, version: int) -> dict[str, str]:
    record = json.loads(world.stored("datasets", USER, slug, "dataset.json").read_text())
    return {f["name"]: f["sha256"] for f in record["versions"][version - 1]["files"]}


@pytest.mark.slow
def test_dataset_push_creates_then_skips_an_unchanged_folder_then_adds_a_version(world,
                                                                                 tmp_path):
    files = {"model_f0.kpenc": b"\x01" * 70000, "model_f1.kpenc": b"\x02" * 3}
    folder = write_files(tmp_path / "my_models", files)

    first = world.kernelpack("dataset", "push", str(folder), "--public", "--wait")
    assert first.returncode == 0, first
    assert first.stdout == (f"{USER}/my-models: version 1 is ready, all 2 files listed with "
                            "their sizes\n")
    metadata = json.loads((folder / "dataset-metadata.json").read_text())
    assert metadata["id"] == f"{USER}/my-models"          # written from the folder name
    assert _stored_digests(world, "my-models", 1) == {
        name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    record = json.loads(world.stored("datasets", USER, "my-models", "dataset.json").read_text())
    assert record["isPrivate"] is False
    assert MANIFEST_FILE not in _stored_digests(world, "my-models", 1)

    again = world.kernelpack("dataset", "push", str(folder), "--wait")
    assert again.stdout == f"{USER}/my-models: unchanged since version 1; nothing uploaded\n"

    (folder / "model_f1.kpenc").write_bytes(b"\x03" * 4)
    changed = world.kernelpack("dataset", "push", str(folder), "-m", "f1 retrained", "--wait")
    assert "version 2 is ready" in changed.stdout, changed
    assert _stored_digests(world, "my-models", 2)["model_f1.kpenc"] == \
        hashlib.sha256(b"\x03" * 4).hexdigest()


@pytest.mark.slow
def test_dataset_push_refuses_sub_folders_naming_them(world, tmp_path):
    folder = write_files(tmp_path / "nested-data", {"a.bin": b"a"})
    (folder / "more").mkdir()
    refused = world.kernelpack("dataset", "push", str(folder))
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"kernelpack: error: {folder}: holds sub-folders ['more']")
    assert not world.stored("datasets").exists()


@pytest.mark.slow
def test_missing_credentials_is_one_line_naming_where_to_put_them(world, tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "empty"))
    with pytest.raises(KaggleAuthError, match=r"put kaggle.json .* in .*/empty/ with mode 600, "
                                              r"or set KAGGLE_USERNAME and KAGGLE_KEY"):
        KaggleSession(world.url)
    run = world.kernelpack("kernel", "status", f"{USER}/anything")
    assert run.returncode == 1 and run.stdout == "" and len(run.stderr.splitlines()) == 1


@pytest.mark.slow
def test_credentials_from_environment_variables_name_the_user(world, tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "empty"))
    world.service.add_user("someone", "k")               # a user the service knows
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "k")
    pushed = world.kernelpack("dataset", "push", str(write_files(tmp_path / "env-data",
                                                                 {"x": b"x"})))
    assert pushed.returncode == 0, pushed
    assert world.stored("datasets", "someone", "env-data", "dataset.json").is_file()


@pytest.mark.slow
def test_someone_elses_private_dataset_reads_as_missing(world, tmp_path, monkeypatch):
    folders = {name: write_files(tmp_path / name, {"p": b"p"})
               for name in ("private-data", "public-data")}
    assert world.kernelpack("dataset", "push", str(folders["private-data"])).returncode == 0
    assert world.kernelpack("dataset", "push", str(folders["public-data"]),
                            "--public").returncode == 0
    world.service.add_user("someone", "k")               # a user the service knows
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")     # overrides kaggle.json
    monkeypatch.setenv("KAGGLE_KEY", "k")
    session = KaggleSession(world.url)
    assert not session.dataset_exists(f"{USER}/private-data")
    assert session.dataset_exists(f"{USER}/public-data")


@pytest.mark.slow
def test_an_access_token_signs_in_as_its_user_and_an_unknown_one_does_not(world, tmp_path,
                                                                         monkeypatch):
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "empty"))
    world.service.add_token("tok-123", "token-user")
    monkeypatch.setenv("KAGGLE_API_TOKEN", "tok-123")
    pushed = world.kernelpack("dataset", "push", str(write_files(tmp_path / "token-data",
                                                                 {"t": b"t"})))
    assert pushed.returncode == 0, pushed
    assert world.stored("datasets", "token-user", "token-data", "dataset.json").is_file()
    monkeypatch.setenv("KAGGLE_API_TOKEN", "tok-unknown")
    with pytest.raises(KaggleAuthError, match="no Kaggle credentials found"):
        KaggleSession(world.url)


@pytest.mark.slow
def test_kernel_push_refuses_an_unset_id_and_a_public_kernel_with_a_key(world, tmp_path):
    unset = tiny_kernel(tmp_path / "unset", "x-kernel", "print(1)\n")
    meta = json.loads((unset / "kernel-metadata.json").read_text())
    (unset / "kernel-metadata.json").write_text(json.dumps({**meta, "id": "INSERT_USERNAME/x"}))
    refused = world.kernelpack("kernel", "push", str(unset))
    assert refused.returncode == 1 and "kernel.id is not set" in refused.stderr

    keyed = tiny_kernel(tmp_path / "keyed", "keyed-kernel", f"{KEY_MARKER}\nprint(1)\n",
                        is_private=False)
    refused = world.kernelpack("kernel", "push", str(keyed))
    assert refused.returncode == 1, refused
    assert "embeds a decryption key but" in refused.stderr and "is_private: false" in refused.stderr
    assert not world.stored("kernels").exists()           # nothing reached the service


def test_the_accelerator_a_build_writes_reaches_the_service_and_an_unknown_one_is_refused(
        world, tmp_path, ensemble_yml):
    ensemble_yml.write_text(ensemble_yml.read_text().replace(
        "kernel: {id: tester/digits-kernel, competition_sources: [digits]",
        f"kernel: {{id: {USER}/gpu-kernel, accelerator: T4 x2"))
    folder = build_kernel(ensemble_yml, tmp_path / "built").metadata.parent
    pushed = world.kernelpack("kernel", "push", str(folder))
    assert pushed.returncode == 0, pushed
    record = json.loads(world.stored("kernels", USER, "gpu-kernel", "kernel.json").read_text())
    version = record["versions"][0]
    assert (version["machineShape"], version["enableGpu"]) == ("NvidiaTeslaT4", True)
    assert not version.get("enableTpu")

    unknown = tiny_kernel(tmp_path / "unknown", "h100-kernel", "print(1)\n",
                          machine_shape="NvidiaH100")
    refused = world.kernelpack("kernel", "push", str(unknown))
    assert refused.returncode == 1
    assert "machine_shape 'NvidiaH100' is none the kaggle client knows (NvidiaTeslaT4, " \
           "NvidiaTeslaP100, Tpu1VmV38)" in refused.stderr
    assert not world.stored("kernels", USER, "h100-kernel").exists()


@pytest.mark.slow
def test_kernel_push_fails_when_the_service_drops_a_source(world, tmp_path):
    kernel = tiny_kernel(tmp_path / "k", "some-kernel", "print(1)\n",
                         dataset_sources=[f"{USER}/never-pushed"])
    run = world.kernelpack("kernel", "push", str(kernel))
    assert run.returncode == 1
    assert f"dropped dataset sources ['{USER}/never-pushed']" in run.stderr


@pytest.mark.slow
def test_kernel_push_wait_then_status_logs_and_output_through_the_environment_url(
        world, tmp_path, monkeypatch):
    monkeypatch.setenv("KERNELPACK_KAGGLE_URL", world.url)
    kernel = tiny_kernel(tmp_path / "k", "hello-kernel",
                         'print("hello from the sandbox")\nopen("out.txt", "w").write("42")\n')
    pushed = world.kernelpack("kernel", "push", str(kernel), "--wait", url=False)
    assert pushed.stdout.startswith(f"{USER}/hello-kernel: version 1 ran to completion"), pushed
    status = world.kernelpack("kernel", "status", f"{USER}/hello-kernel", url=False)
    assert status.stdout == f"{USER}/hello-kernel: COMPLETE\n"
    logs = world.kernelpack("kernel", "logs", f"{USER}/hello-kernel", url=False)
    assert logs.stdout == "hello from the sandbox\n"
    out = tmp_path / "out"
    world.kernelpack("kernel", "output", f"{USER}/hello-kernel", "-p", str(out), url=False)
    assert (out / "out.txt").read_text() == "42"


@pytest.mark.slow
def test_a_failing_kernel_run_is_an_error_with_its_last_log_line(world, tmp_path):
    kernel = tiny_kernel(tmp_path / "k", "broken-kernel", 'raise SystemExit("no test images")\n')
    run = world.kernelpack("kernel", "push", str(kernel), "--wait")
    assert run.returncode == 1
    assert "the run ended ERROR: the kernel exited with code 1: no test images" in run.stderr
    assert world.kernelpack("kernel", "status", f"{USER}/broken-kernel").returncode == 1


@pytest.mark.slow
def test_submit_wait_prints_the_score_of_the_newest_version(world, tmp_path):
    data = write_files(tmp_path / "comp" / "data",
                       {"sample_submission.csv": b"id,label\na,0\nb,0\nc,0\nd,0\n"})
    (tmp_path / "comp" / "solution.csv").write_text("id,label\na,1\nb,1\nc,1\nd,0\n")
    add_competition(world.root, "tinycomp", data, tmp_path / "comp" / "solution.csv")
    kernel = tiny_kernel(tmp_path / "k", "ones-kernel", PREDICT_ONES,
                         competition_sources=["tinycomp"])
    assert world.kernelpack("kernel", "push", str(kernel), "--wait").returncode == 0

    run = world.kernelpack("submit", "tinycomp", "--kernel", f"{USER}/ones-kernel", "--wait")
    assert run.stdout == (f"tinycomp: submission 1 ({USER}/ones-kernel version 1) scored "
                          "0.75000 public, 0.75000 private\n"), run
    missing = world.kernelpack("submit", "no-such-comp", "--kernel", f"{USER}/ones-kernel")
    assert missing.returncode == 1
    assert "competition 'no-such-comp' not found; check the id" in missing.stderr


@pytest.mark.slow
def test_the_rerun_uses_the_dataset_version_the_kernel_ran_with(world, tmp_path):
    data = write_files(tmp_path / "comp" / "data", {"sample_submission.csv": b"id,label\na,0\n"})
    (tmp_path / "comp" / "solution.csv").write_text("id,label\na,1\n")
    add_competition(world.root, "tinycomp", data, tmp_path / "comp" / "solution.csv")
    session = KaggleSession(world.url, poll_seconds=0.2)
    weights = write_files(tmp_path / "pinned-data", {"label.txt": b"1"})
    session.push_dataset(weights, wait=True)
    kernel = tiny_kernel(tmp_path / "k", "pinned-kernel",
                         'label = open("../input/pinned-data/label.txt").read()\n'
                         'open("submission.csv", "w").write(f"id,label\\na,{label}\\n")\n',
                         competition_sources=["tinycomp"],
                         dataset_sources=[f"{USER}/pinned-data"])
    session.push_kernel(kernel, wait=True)
    (weights / "label.txt").write_bytes(b"0")
    assert session.push_dataset(weights, wait=True).version == 2
    submission = session.submit("tinycomp", f"{USER}/pinned-kernel", wait=True)
    assert submission.public_score == "1.00000"        # version 1's label, not version 2's


@pytest.mark.slow
def test_dataset_pushed_without_wait_is_not_verified_and_says_so(world, tmp_path):
    folder = dataset_folder(tmp_path / "ds", "quick-data", {"q.bin": b"q"})
    run = world.kernelpack("dataset", "push", str(folder))
    assert "version 1 created (1 files); pass --wait" in run.stdout
    assert not (folder / MANIFEST_FILE).exists()


@pytest.mark.parametrize("dataset_id", ["x", "me/", "/slug", "me/Upper", "me/a/b", "me/a b"])
def test_a_bad_dataset_id_is_refused_before_any_metadata_is_written(tmp_path, dataset_id):
    from kernelpack.errors import KaggleError

    folder = write_files(tmp_path / "weights", {"w.bin": b"w"})
    with pytest.raises(KaggleError, match=r"must be OWNER/dataset-slug"):
        dataset_metadata(folder, dataset_id, None, default_owner=USER)
    assert not (folder / "dataset-metadata.json").exists()  # a later push is not broken by it
    (folder / "dataset-metadata.json").write_text(f'{{"id": "{dataset_id}"}}')
    with pytest.raises(KaggleError, match=r"id must be 'owner/dataset-slug'"):
        dataset_metadata(folder, None, None, default_owner=USER)


def test_slugs_and_titles_follow_one_rule_for_datasets_and_kernels(tmp_path):
    assert slug_of("My_Models.v2") == "my-models-v2" and slug_of("--a  b--") == "a-b"
    assert title_of("my-models-v2") == "My Models V2"
    folder = write_files(tmp_path / "Se50_Weights.v2", {"w.bin": b"w"})
    metadata = dataset_metadata(folder, None, None, default_owner=USER)
    assert metadata["id"] == f"{USER}/se50-weights-v2" and metadata["title"] == "Se50 Weights V2"
    metadata = kernel_metadata(KernelSection(), slug_of("ensemble.final"))
    assert (metadata["id"], metadata["title"]) == ("INSERT_USERNAME/ensemble-final",
                                                   "Ensemble Final")
