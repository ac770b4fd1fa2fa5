"""Kaggle Models end to end: `kernelpack model push` (the real KaggleApi) against the local service
over HTTP, the unmodified `kaggle` command reading what it stored, handles checked before anything
is sent, and a rehearsal: encrypted weights pushed as a model, a kernel that names the model in
`model_sources`, its run finds the weights under input/MODEL/FRAMEWORK/VARIATION/VERSION/, and
its submission is scored."""

import base64
import contextlib
import csv
import io
import json
import urllib.error
import urllib.request

import pytest
from kaggle_helpers import (
    KEY,
    USER,
    dataset_folder,
    kaggle_world,
    run_kaggle,
    submit_and_check_score,
    tiny_kernel,
    write_files,
)
from kagglesdk.models.types.model_enums import ModelFramework
from tqdm import tqdm

from conftest import ENSEMBLE_YML
from inference_core.kpenc import load_key
from kernelpack.kaggle.model_handles import FRAMEWORKS, framework_key, wire_name
from kernelpack.kaggle.service import add_competition
from kernelpack.kaggle.session import KaggleSession
from kernelpack.kernel.build import build_kernel
from kernelpack.metadata import MODEL_INSTANCE_METADATA, MODEL_METADATA
from kernelpack.weights.encrypt import encrypt_checkpoint, keygen

HANDLE = f"{USER}/digits-cnn/pyTorch/default"


@pytest.fixture
def world(tmp_path, monkeypatch):
    yield from kaggle_world(tmp_path, monkeypatch)


def _rpc(world, method, request, user=USER, key=KEY):
    """One JSON call to the service, as `user`; (HTTP status, answer)."""
    token = base64.b64encode(f"{user}:{key}".encode()).decode()
    call = urllib.request.Request(f"{world.url}/api/v1/models.ModelApiService/{method}",
                                  data=json.dumps(request).encode(), method="POST",
                                  headers={"Authorization": f"Basic {token}",
                                           "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(call, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_frameworks_are_the_clients():
    """Every framework the client can send (less UNSPECIFIED and API, which holds no files) is
    known here by the very enum name it sends, and the spellings a handle may use map to it."""
    sent = {m.name for m in ModelFramework} - {"MODEL_FRAMEWORK_UNSPECIFIED", "MODEL_FRAMEWORK_API"}
    assert {wire_name(key) for key in FRAMEWORKS} == sent
    assert {framework_key(name) for name in ("pyTorch", "pytorch", "PY_TORCH", "PyTorch",
                                             "MODEL_FRAMEWORK_PY_TORCH")} == {"pytorch"}
    assert framework_key("tensorFlow2") == "tensorflow2"
    assert framework_key("tensorFlow") is None and framework_key("torch") is None


@pytest.mark.slow
@pytest.mark.parametrize(("handle", "says"), [
    (f"{USER}/digits-cnn/pyTorch", "expected OWNER/MODEL/FRAMEWORK/VARIATION (4 parts"),
    (f"{USER}/digits-cnn/pyTorch/default/1", "(4 parts separated by '/', got 5)"),
    (f"{USER}/Digits_CNN/pyTorch/default", "model 'Digits_CNN' must be lower-case letters"),
    (f"{USER}/digits-cnn/pyTorch/-default", "variation '-default' must be"),
    (f"{USER}/digits-cnn/tensorFlow/default", "framework 'tensorFlow' is not one Kaggle knows; "
                                              "use one of tensorFlow1, tensorFlow2"),
    (f"{USER}/digits-cnn/torch/default", "framework 'torch' is not one Kaggle knows"),
])
def test_a_malformed_handle_is_one_line_and_nothing_is_sent(world, tmp_path, handle, says):
    folder = write_files(tmp_path / "weights", {"w.bin": b"\x01" * 64})
    run = world.kernelpack("model", "push", str(folder), "--handle", handle)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and says in run.stderr, run.stderr
    assert run.stderr.startswith(f"kernelpack: error: --handle {handle!r}: ")
    # Nothing reached the service, and nothing was written into the folder.
    assert not world.stored("models").exists() and not world.stored("blobs").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["w.bin"]


def _stored(world, version):
    folder = world.stored("models", USER, "digits-cnn", "pytorch", "default", str(version))
    return {path.name: path.read_bytes() for path in folder.iterdir()}


@pytest.mark.slow
def test_push_creates_then_versions_then_skips_an_unchanged_folder(world, tmp_path):
    files = {"cnn_f0.kpenc": bytes(range(256)) * 40, "cnn_f1.kpenc": b"\x07" * 3001}
    folder = write_files(tmp_path / "weights", files)
    first = world.kernelpack("model", "push", str(folder), "--handle", HANDLE, "--wait")
    assert first.returncode == 0, first
    assert (f"{HANDLE}: version 1 is ready (created the model and the instance), all 2 files "
            f"listed with their sizes (model_sources: {HANDLE}/1; input/models/"
            f"{HANDLE.split('/')[0]}/digits-cnn/pytorch/default/1/ "
            "(flat: input/digits-cnn/pytorch/default/1/))") in first.stdout
    assert _stored(world, 1) == files
    # The unmodified kaggle command sees the model the way kernelpack pushed it.
    listed = world.kaggle("models", "instances", "versions", "files", f"{HANDLE}/1", "-v")
    assert listed.returncode == 0, listed
    rows = {row["name"]: int(row["size"]) for row in csv.DictReader(listed.stdout.splitlines())}
    assert rows == {name: len(data) for name, data in files.items()}
    (tmp_path / "meta").mkdir()
    got = world.kaggle("models", "get", f"{USER}/digits-cnn", "-p", str(tmp_path / "meta"))
    assert got.returncode == 0, got
    model = json.loads((tmp_path / "meta" / "model-metadata.json").read_text())
    assert (model["ownerSlug"], model["slug"], model["title"], model["isPrivate"]) == \
        (USER, "digits-cnn", "Digits Cnn", True)

    files["cnn_f1.kpenc"] = b"\x08" * 2000      # retrained: a new version, given with -p
    write_files(folder, files)
    second = world.kernelpack("model", "push", "-p", str(folder), "--handle",
                              f"{USER}/digits-cnn/pytorch/default", "-m", "fold 1 retrained",
                              "--wait")
    assert second.returncode == 0, second
    assert f"{HANDLE}: version 2 is ready, all 2 files" in second.stdout
    assert _stored(world, 2) == files and _stored(world, 1)["cnn_f1.kpenc"] == b"\x07" * 3001
    record = json.loads(world.stored("models", USER, "digits-cnn", "pytorch", "default",
                                     "instance.json").read_text())
    assert [v["notes"] for v in record["versions"]] == ["", "fold 1 retrained"]

    third = world.kernelpack("model", "push", str(folder), "--handle", HANDLE, "--wait")
    assert third.returncode == 0, third
    assert f"{HANDLE}: unchanged since version 2; nothing uploaded" in third.stdout
    assert len(json.loads(world.stored("models", USER, "digits-cnn", "pytorch", "default",
                                       "instance.json").read_text())["versions"]) == 2

    # Without --wait the version is created but not verified, so a later push is not skipped.
    write_files(folder, {"cnn_f2.kpenc": b"\x09" * 10})
    fourth = world.kernelpack("model", "push", str(folder), "--handle", HANDLE)
    assert fourth.returncode == 0 and "version 3 created (3 files); pass --wait" in fourth.stdout


@pytest.mark.slow
def test_an_upload_shows_one_byte_bar_over_all_files_when_asked(world, tmp_path):
    """The create (version 1) and the new-version uploads each count every byte on one bar; the
    CLI asks for it only on a terminal without --quiet (tests/test_progress.py checks that)."""
    session = KaggleSession(world.url)
    folder = write_files(tmp_path / "weights", {"a.kpenc": b"\x01" * 300_000, "b.kpenc": b"b"})
    for version, extra in ((1, b""), (2, b"more")):
        (folder / "b.kpenc").write_bytes(b"b" + extra)
        total = 300_001 + len(extra)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            push = session.push_model(folder, HANDLE, wait=True, progress=True)
        assert push.version == version and push.verified
        final = err.getvalue().split("\r")[-1]
        size = tqdm.format_sizeof(total, divisor=1024)
        assert final.startswith(f"upload {HANDLE}: 100%|") and f"| {size}/{size} [" in final
    quiet = io.StringIO()
    with contextlib.redirect_stderr(quiet):
        session.push_model(folder, HANDLE, wait=True)
    assert quiet.getvalue() == ""


@pytest.mark.slow
def test_metadata_that_disagrees_with_the_handle_is_one_line(world, tmp_path):
    folder = write_files(tmp_path / "weights", {"w.bin": b"\x01" * 64})
    (folder / MODEL_INSTANCE_METADATA).write_text(json.dumps(
        {"ownerSlug": USER, "modelSlug": "digits-cnn", "instanceSlug": "default",
         "framework": "jax", "licenseName": "MIT"}))
    run = world.kernelpack("model", "push", str(folder), "--handle", HANDLE)
    assert run.returncode == 1 and run.stderr.count("\n") == 1
    assert f"{MODEL_INSTANCE_METADATA}: framework is 'jax' but --handle {HANDLE} says " \
           "'pyTorch'; fix the file or --handle" in run.stderr
    assert not world.stored("models").exists()


@pytest.mark.slow
def test_service_refuses_malformed_and_foreign_model_requests(world, tmp_path):
    world.service.add_user("other", "other-key")
    assert _rpc(world, "CreateModel", {"ownerSlug": USER, "slug": "m", "isPrivate": True})[0] \
        == 200
    instance = {"ownerSlug": USER, "modelSlug": "m", "framework": "MODEL_FRAMEWORK_PY_TORCH",
                "instanceSlug": "v"}
    cases = [
        ("CreateModel", {"ownerSlug": "other", "slug": "m2"}, 403),
        ("CreateModel", {"ownerSlug": USER, "slug": "../m"}, 400),
        ("GetModel", {"ownerSlug": USER, "modelSlug": "nope"}, 404),
        ("CreateModelInstance", {"ownerSlug": USER, "modelSlug": "m", "body": {
            "instanceSlug": "v", "framework": "MODEL_FRAMEWORK_TORCH", "licenseName": "MIT",
            "files": []}}, 400),
        ("CreateModelInstance", {"ownerSlug": USER, "modelSlug": "m", "body": {
            "instanceSlug": "v", "framework": "MODEL_FRAMEWORK_PY_TORCH", "licenseName": "MIT",
            "files": [{"token": "feed"}]}}, 404),
        ("CreateModelInstance", {"ownerSlug": USER, "modelSlug": "m", "body": "x"}, 400),
        ("GetModelInstance", instance, 404),
        ("ListModelInstanceVersionFiles", {**instance, "framework": 5}, 400),
    ]
    for method, request, status in cases:
        code, answer = _rpc(world, method, request)
        assert code == status and answer["code"] == status, (method, request, answer)
    # Someone else's private model is as missing as one that does not exist.
    code, _ = _rpc(world, "GetModel", {"ownerSlug": USER, "modelSlug": "m"}, "other",
                   "other-key")
    assert code == 404
    assert not world.stored("models", USER, "m", "pytorch").exists()


@pytest.mark.slow
def test_a_public_model_is_mounted_for_other_users_and_a_private_one_is_not(world, tmp_path):
    public, private = f"{USER}/open-cnn/pyTorch/default", f"{USER}/own-cnn/pyTorch/default"
    for handle, flags in ((public, ["--public"]), (private, [])):
        folder = write_files(tmp_path / handle.split("/")[1], {"w.kpenc": b"\x01" * 64})
        run = world.kernelpack("model", "push", str(folder), "--handle", handle, "--wait", *flags)
        assert run.returncode == 0, run
    # Someone else's kernel, pushed with the unmodified kaggle command under their account.
    world.service.add_user("other", "other-key")
    home = tmp_path / "other-home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "kaggle.json").write_text('{"username": "other", "key": "other-key"}')
    (home / "config" / "kaggle.json").chmod(0o600)
    kernel = tiny_kernel(tmp_path / "k", "reads", "import os\nprint(os.listdir('../input'))\n",
                         id="other/reads", model_sources=[f"{public}/1", f"{private}/1"])
    pushed = run_kaggle(home, world.tmp, world.url, "kernels", "push", "-p", str(kernel))
    assert pushed.returncode == 0 and "error" not in pushed.stdout.lower(), pushed
    world.service.runner.wait_idle()
    record = json.loads(world.stored("kernels", "other", "reads", "kernel.json").read_text())
    assert record["versions"][0]["status"] == "COMPLETE", record
    assert record["versions"][0]["modelDataSources"] == [f"{public}/1"]
    assert list(record["versions"][0]["mounts"]) == ["open-cnn/pytorch/default/1"]


@pytest.mark.slow
def test_public_that_the_metadata_file_contradicts_is_one_line(world, tmp_path):
    folder = write_files(tmp_path / "weights", {"w.bin": b"\x01" * 64})
    assert world.kernelpack("model", "push", str(folder), "--handle", HANDLE).returncode == 0
    run = world.kernelpack("model", "push", str(folder), "--handle", HANDLE, "--public")
    assert run.returncode == 1 and run.stderr.count("\n") == 1, run
    assert (f"{MODEL_METADATA}: isPrivate is True but --public was given; set \"isPrivate\": "
            "false in it, or drop --public") in run.stderr
    assert len(json.loads(world.stored("models", USER, "digits-cnn", "pytorch", "default",
                                       "instance.json").read_text())["versions"]) == 1


@pytest.mark.slow
def test_a_kernel_naming_a_missing_model_gets_it_dropped(world, tmp_path):
    folder = write_files(tmp_path / "weights", {"w.bin": b"\x01" * 64})
    assert world.kernelpack("model", "push", str(folder), "--handle", HANDLE,
                            "--wait").returncode == 0
    body = "import os\nprint(sorted(os.listdir('../input')))\n"
    sources = [f"{HANDLE}/1", f"{HANDLE}/2", f"{USER}/no-such-model/pyTorch/default/1"]
    kernel = tiny_kernel(tmp_path / "k", "reads-models", body, model_sources=sources)
    run = world.kernelpack("kernel", "push", str(kernel), "--wait")
    assert run.returncode == 1 and run.stderr.count("\n") == 1
    assert (f"dropped model sources ['{HANDLE}/2', '{USER}/no-such-model/pyTorch/default/1']"
            in run.stderr)
    # The valid source was kept and mounted where Kaggle puts it.
    KaggleSession(world.url).wait_kernel(f"{USER}/reads-models", 60)
    record = json.loads(world.stored("kernels", USER, "reads-models", "kernel.json").read_text())
    assert record["versions"][0]["modelDataSources"] == [f"{HANDLE}/1"]
    assert record["versions"][0]["mounts"] == {
        "digits-cnn/pytorch/default/1": "models/tester/digits-cnn/pytorch/default/1"}
    assert "['digits-cnn']" in world.kernelpack("kernel", "logs", f"{USER}/reads-models").stdout

    # A dataset with the model's slug takes input/digits-cnn: the model cannot also lie inside.
    data = dataset_folder(tmp_path / "data", "digits-cnn", {"x.csv": b"x\n"})
    assert world.kernelpack("dataset", "push", str(data), "--wait").returncode == 0
    kernel = tiny_kernel(tmp_path / "k2", "reads-both", body, model_sources=[f"{HANDLE}/1"],
                         dataset_sources=[f"{USER}/digits-cnn"])
    run = world.kernelpack("kernel", "push", str(kernel))
    assert f"dropped model sources ['{HANDLE}/1']" in run.stderr, run


@pytest.mark.slow
def test_rehearsal_with_encrypted_weights_as_a_kaggle_model(world, tmp_path, digits_input):
    """Encrypt the digits checkpoints, push them as a model, build a kernel (with the key) that
    names the model in model_sources and no model dataset, run it, submit it, get a score."""
    labels = digits_input.parent / "heldout" / "test_labels.csv"
    add_competition(world.root, "digits", digits_input / "digits", labels)
    key = load_key(keygen(tmp_path / "kp.key"))
    weights = tmp_path / "weights"
    weights.mkdir()
    for fold in range(2):
        encrypt_checkpoint(digits_input / "digits-models" / f"cnn_f{fold}.pt", key,
                           weights / f"cnn_f{fold}.kpenc")
    pushed = world.kernelpack("model", "push", str(weights), "--handle", HANDLE, "--wait")
    assert pushed.returncode == 0, pushed

    # Each model's path hint is where Kaggle mounts the model version: found there or nowhere.
    text = ENSEMBLE_YML.replace("competition_sources: [digits]}",
                                f"competition_sources: [digits], model_sources: [{HANDLE}/1]}}")
    for fold in range(2):
        text = text.replace(f"digits-models/cnn_f{fold}.pt",
                            f"digits-cnn/pytorch/default/1/cnn_f{fold}.kpenc")
    config = tmp_path / "ensemble.yml"
    config.write_text(text)
    built = build_kernel(config, tmp_path / "out", key=key)
    metadata = json.loads((tmp_path / "out" / "kernel-metadata.json").read_text())
    assert metadata["model_sources"] == [f"{HANDLE}/1"] and metadata["is_private"]
    run = world.kernelpack("kernel", "push", str(built.kernel.parent), "--wait")
    log = world.kernelpack("kernel", "logs", f"{USER}/digits-kernel").stdout
    assert run.returncode == 0, (run, log)
    # The run found both folds, encrypted, under the model's Kaggle path.
    assert "digits-cnn/pytorch/default/1/cnn_f0.kpenc" in log, log
    assert "digits-cnn/pytorch/default/1/cnn_f1.kpenc" in log, log
    assert "decrypted in memory" in log and key.hex() not in log

    submit_and_check_score(world, "digits", f"{USER}/digits-kernel", labels)
