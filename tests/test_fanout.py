"""The fan-out's parts without Kaggle: shard names, the shard kernel's program run in-process on
real models and images, the output check (each way an output can be wrong), assembly into
`predict`'s own files, the state folder, and the service's concurrent workers."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from fanout_helpers import ENSEMBLE, MODELS_SLUG, TRAIN_ROWS, save_models, service_world
from kaggle_helpers import USER, tiny_kernel

from kernelpack.cli import main
from kernelpack.cli.main import make_parser
from kernelpack.config import load_config
from kernelpack.errors import PredictError
from kernelpack.fanout.assemble import OutputRejected, assemble, check_output
from kernelpack.fanout.plan import plan_shards
from kernelpack.fanout.run import _discover, _members, _rows
from kernelpack.fanout.shard_entry import run_shard
from kernelpack.fanout.state import RUNNING, FanoutState


@pytest.fixture(scope="module")
def work(tmp_path_factory, digits_input):
    """An input root laid out like Kaggle's (the competition and the model dataset), the
    config reading it, and predict's own files for the test rows and out of fold."""
    root = tmp_path_factory.mktemp("fanout-parts")
    inputs = root / "input"
    inputs.mkdir()
    (inputs / "digits").symlink_to(digits_input / "digits")
    save_models(inputs / MODELS_SLUG)
    config = root / "ensemble.yml"
    config.write_text(ENSEMBLE + f"input_roots: [{inputs}]\n")
    competition = digits_input / "digits"
    ids = [line.split(",")[0] for line in (competition / "train.csv").read_text().split()[1:]]
    sample = root / "train-sample.csv"
    sample.write_text("id,label\n" + "".join(f"{i},0\n" for i in ids[:TRAIN_ROWS]))
    folds = np.arange(TRAIN_ROWS) % 2
    np.save(root / "folds.npy", folds)
    test = ["--images", str(competition / "test"), "--sample",
            str(competition / "sample_submission.csv")]
    oof = ["--images", str(competition / "train"), "--sample", str(sample), "--folds",
           str(root / "folds.npy")]
    for name, args in (("test", test), ("oof", oof)):
        assert main(["predict", str(config), "-o", str(root / name / "preds.npy"), "--quiet",
                     "--per-model", *args]) == 0
    for name, args in (("topk", test), ("oof-topk", oof)):
        assert main(["predict", str(config), "-o", str(root / name / "preds.npz"), "--quiet",
                     "--per-model", "--top-k", "3", *args]) == 0
    host = load_config(config)
    return {"root": root, "config": host.ensemble, "competition": competition, "folds": folds,
            "sample": sample}


def _plan(work, folds=None, rows_per_shard=16, models_per_shard=2, images="digits/test",
          top_k=None):
    config = work["config"]
    competition = work["competition"]
    if folds is None:
        rows = _rows(config, competition / "test", competition / "sample_submission.csv")
    else:
        rows = _rows(config, competition / "train", work["sample"])
    members = _members(config, _discover(config, (), lambda _: None))
    shards = plan_shards(members, rows, folds, config=config.to_dict(), code_digest="code",
                         images=images, rows_per_shard=rows_per_shard,
                         models_per_shard=models_per_shard, top_k=top_k)
    return rows, members, shards


def _run_all(work, state: FanoutState, rows, shards, images="digits/test"):
    for shard in shards:
        folder = state.incoming(shard.name)
        run_shard(shard.spec(rows, images), work["config"].to_dict(), None, folder)
        check_output(folder, shard, rows)
        state.commit(shard.name, folder)
    return [(shard, state.shard_folder(shard.name)) for shard in shards]


def test_shard_names_follow_what_the_shard_computes(work):
    rows, members, shards = _plan(work)
    assert [len(s.rows) for s in shards] == [16, 14, 16, 14]
    assert [[m.label for m in s.members] for s in shards] == [["cnn_f0", "cnn_f1"]] * 2 \
        + [["solo"]] * 2
    assert _plan(work)[2] == shards    # the same work, the same names
    assert len({s.name for s in shards}) == 4 and all(re.fullmatch(r"s[0-9a-f]{20}", s.name)
                                                      for s in shards)
    config = work["config"]

    def names(**changes):
        changed = dataclasses.replace(members[2], **changes)
        return [s.name for s in plan_shards(
            [*members[:2], changed], rows, None, config=config.to_dict(), code_digest="code",
            images="digits/test", rows_per_shard=16, models_per_shard=2)]

    same = [s.name for s in shards]
    # Another checkpoint or weight for solo renames solo's shards only.
    for renamed in (names(sha256="0" * 64), names(weight=0.5)):
        assert renamed[:2] == same[:2] and set(renamed[2:]).isdisjoint(same)
    other_config = plan_shards(members, rows, None,
                               config={**config.to_dict(), "tta": ["identity"]},
                               code_digest="code", images="digits/test", rows_per_shard=16,
                               models_per_shard=2)
    other_code = plan_shards(members, rows, None, config=config.to_dict(), code_digest="new",
                             images="digits/test", rows_per_shard=16, models_per_shard=2)
    for other in (other_config, other_code):
        assert {s.name for s in other}.isdisjoint(same)
    with pytest.raises(PredictError, match="must be 1 or more"):
        _plan(work, rows_per_shard=0)


def test_out_of_fold_a_fold_model_runs_only_on_the_rows_it_held_out(work):
    _, _, shards = _plan(work, folds=work["folds"], rows_per_shard=4)
    by_member: dict[str, list[int]] = {}
    for shard in shards:
        assert not shard.blend and len(shard.members) == 1
        by_member.setdefault(shard.members[0].label, []).extend(shard.rows)
    assert by_member == {"cnn_f0": list(range(0, TRAIN_ROWS, 2)),
                         "cnn_f1": list(range(1, TRAIN_ROWS, 2)),
                         "solo": list(range(TRAIN_ROWS))}


def test_shards_run_here_assemble_into_predicts_own_files(work, tmp_path):
    rows, members, shards = _plan(work)
    state = FanoutState.open(tmp_path / "state")
    done = _run_all(work, state, rows, shards)
    out = tmp_path / "out" / "preds.npy"
    written = assemble(done, members, rows, mode="gmean", folds=None, per_model=True,
                       output=out, log=lambda _: None)
    assert sorted(p.name for p in written) == ["preds.cnn.npy", "preds.npy", "preds.solo.npy"]
    for path in written:
        np.testing.assert_allclose(np.load(path), np.load(work["root"] / "test" / path.name),
                                   rtol=0, atol=1e-6)
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(p.name for p in written)

    # The top-k form, as predict --top-k writes it.
    out = tmp_path / "topk" / "preds.npz"
    written = assemble(done, members, rows, mode="gmean", folds=None, per_model=True,
                       output=out, log=lambda _: None, top_k=3)
    assert sorted(p.name for p in written) == ["preds.cnn.npz", "preds.npz", "preds.solo.npz"]
    _same_top_k(written, work["root"] / "topk")

    # Out of fold: each entry's file, not a whole blend.
    rows, members, shards = _plan(work, folds=work["folds"], images="digits/train")
    done = _run_all(work, state, rows, shards, images="digits/train")
    out = tmp_path / "oof" / "preds.npy"
    written = assemble(done, members, rows, mode="gmean", folds=work["folds"], per_model=False,
                       output=out, log=lambda _: None)
    assert sorted(p.name for p in written) == ["preds.cnn.npy", "preds.solo.npy"]
    for path in written:
        np.testing.assert_allclose(np.load(path), np.load(work["root"] / "oof" / path.name),
                                   rtol=0, atol=1e-6)


def _same_top_k(written, reference: Path) -> None:
    for path in written:
        ours, theirs = np.load(path), np.load(reference / path.name)
        assert sorted(ours.files) == sorted(theirs.files)
        np.testing.assert_array_equal(ours["indices"], theirs["indices"])
        assert int(ours["num_classes"]) == int(theirs["num_classes"]) == 10
        np.testing.assert_allclose(ours["probabilities"], theirs["probabilities"], rtol=0,
                                   atol=1e-6)


def test_out_of_fold_top_k_shards_send_k_classes_a_row_and_assemble_into_predicts_files(
        work, tmp_path):
    rows, members, shards = _plan(work, folds=work["folds"], images="digits/train", top_k=3)
    dense = _plan(work, folds=work["folds"], images="digits/train")[2]
    assert {s.name for s in shards}.isdisjoint(s.name for s in dense)  # other work, other names
    state = FanoutState.open(tmp_path / "state")
    done = _run_all(work, state, rows, shards, images="digits/train")
    for shard, folder in done:  # rows x k came back, never rows x classes
        assert not list(folder.glob("member-?.npy"))
        assert np.load(folder / "member-0.probabilities.npy").shape == (len(shard.rows), 3)
    out = tmp_path / "oof" / "preds.npz"
    written = assemble(done, members, rows, mode="gmean", folds=work["folds"], per_model=False,
                       output=out, log=lambda _: None, top_k=3)
    assert sorted(p.name for p in written) == ["preds.cnn.npz", "preds.solo.npz"]
    _same_top_k(written, work["root"] / "oof-topk")


def test_test_row_shards_holding_every_model_send_top_k_entries_and_blend(work, tmp_path):
    rows, members, shards = _plan(work, models_per_shard=3, top_k=3)
    assert [s.top_k for s in shards] == [3, 3]  # 2 row slices, every model in each
    # Holding part of the models, a shard cannot know an entry's or the blend's best classes.
    assert {s.top_k for s in _plan(work, models_per_shard=2, top_k=3)[2]} == {None}
    state = FanoutState.open(tmp_path / "state")
    done = _run_all(work, state, rows, shards)
    for shard, folder in done:  # each entry's and the blend's k best, no rows x classes array
        assert sorted(p.name for p in folder.glob("*.npy")) == sorted(
            f"{stem}.{part}.npy" for stem in ("entry-0", "entry-1", "blend")
            for part in ("indices", "probabilities"))
        assert np.load(folder / "blend.probabilities.npy").shape == (len(shard.rows), 3)
    out = tmp_path / "topk" / "preds.npz"
    written = assemble(done, members, rows, mode="gmean", folds=None, per_model=True,
                       output=out, log=lambda _: None, top_k=3)
    assert sorted(p.name for p in written) == ["preds.cnn.npz", "preds.npz", "preds.solo.npz"]
    _same_top_k(written, work["root"] / "topk")
    # An entry missing from a shard's manifest is refused.
    shard, folder = done[0]
    _manifest(folder, lambda m: m["entries"].pop())
    with pytest.raises(OutputRejected, match=r"entries are not \['cnn', 'solo'\]"):
        check_output(folder, shard, rows)


def test_a_top_k_output_with_a_class_outside_the_label_space_is_refused(work, tmp_path):
    rows, _, shards = _plan(work, folds=work["folds"], images="digits/train", top_k=3)
    folder = tmp_path / "out"
    run_shard(shards[0].spec(rows, "digits/train"), work["config"].to_dict(), None, folder)
    check_output(folder, shards[0], rows)
    path = folder / "member-0.indices.npy"

    def rewrite_and_sign(change) -> None:  # as if the kernel itself had written it
        _rewrite(path, change)
        _manifest(folder, lambda m: m["members"][0]["indices"].update(
            sha256=hashlib.sha256(path.read_bytes()).hexdigest()))

    rewrite_and_sign(lambda a: np.where(a == a.max(), 10, a).astype(np.int32))
    with pytest.raises(OutputRejected, match=r"classes outside 0\.\.9"):
        check_output(folder, shards[0], rows)
    rewrite_and_sign(lambda a: a.astype(np.int64))
    with pytest.raises(OutputRejected, match=r"is int64 .*expected int32"):
        check_output(folder, shards[0], rows)


@pytest.fixture(scope="module")
def one_output(work):
    """A shard's output as its kernel writes it."""
    rows, _, shards = _plan(work, rows_per_shard=8)
    folder = work["root"] / "one-output"
    run_shard(shards[0].spec(rows, "digits/test"), work["config"].to_dict(), None, folder)
    return rows, shards[0], folder


def _rewrite(path: Path, change) -> None:
    array = np.load(path)
    with open(path, "wb") as handle:
        np.save(handle, change(array))


def _manifest(folder: Path, change) -> None:
    path = folder / "shard.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage, reason", [
    (lambda f: (f / "shard.json").unlink(), "no shard.json"),
    (lambda f: (f / "shard.json").write_text("{not json"), "not readable JSON"),
    (lambda f: (f / "member-1.npy").unlink(), "member-1.npy is missing"),
    (lambda f: _rewrite(f / "member-0.npy", lambda a: a + 1e-3), "changed after the kernel"),
    (lambda f: _rewrite(f / "blend.npy", lambda a: a.astype(np.float32)), "changed after"),
    (lambda f: _manifest(f, lambda m: m.update(shard="s" + "0" * 20)), "is for shard"),
    (lambda f: _manifest(f, lambda m: m["ids"].reverse()), "ids are not the shard's"),
    (lambda f: _manifest(f, lambda m: m["members"].reverse()), "members are not"),
    (lambda f: _manifest(f, lambda m: m.pop("weight")), "lists no weight.npy"),
    (lambda f: _manifest(f, lambda m: m["members"][0].update(file="../x.npy")), "names '../x"),
])
def test_an_output_is_refused_for_each_way_it_can_be_wrong(work, one_output, tmp_path, damage,
                                                          reason):
    rows, shard, output = one_output
    folder = shutil.copytree(output, tmp_path / "output")
    assert check_output(folder, shard, rows)["shard"] == shard.name
    damage(folder)
    with pytest.raises(OutputRejected, match=re.escape(reason)):
        check_output(folder, shard, rows)


def test_a_shard_refuses_a_checkpoint_other_than_the_one_hashed_here(work, tmp_path):
    rows, _, shards = _plan(work)
    spec = shards[-1].spec(rows, "digits/test")
    spec["members"][0]["sha256"] = "0" * 64
    from inference_core.errors import KernelError
    with pytest.raises(KernelError, match="the attached copy is stale"):
        run_shard(spec, work["config"].to_dict(), None, tmp_path)
    assert not list(tmp_path.iterdir())     # nothing written, no manifest


def test_the_state_survives_a_restart_and_a_damaged_one_is_one_line(tmp_path):
    state = FanoutState.open(tmp_path / "state")
    record = state.record("s1")
    record.kernel, record.version, record.status = f"{USER}/k-s1", 3, RUNNING
    state.save()
    (tmp_path / "state" / "incoming" / "left-over").mkdir()
    again = FanoutState.open(tmp_path / "state")
    assert again.records["s1"].version == 3 and again.records["s1"].status == RUNNING
    assert not list((tmp_path / "state" / "incoming").iterdir())
    (tmp_path / "state" / "fanout.json").write_text("{\"format\": 99}")
    with pytest.raises(PredictError, match="move it away to start over"):
        FanoutState.open(tmp_path / "state")
    (tmp_path / "file").write_text("")
    with pytest.raises(PredictError, match="is not a folder"):
        FanoutState.open(tmp_path / "file")


def test_predicts_checks_come_first_and_bad_numbers_are_usage_errors(work, tmp_path, capsys):
    config = work["root"] / "ensemble.yml"
    competition = work["competition"]
    # --folds rows whose fold no cnn model has: refused before anything is pushed (no service).
    np.save(tmp_path / "folds.npy", np.tile([0, 7], TRAIN_ROWS // 2))
    code = main(["fanout", str(config), "--images", str(competition / "train"), "--sample",
                 str(work["sample"]), "--folds", str(tmp_path / "folds.npy"), "-o",
                 str(tmp_path / "p.npy"), "--kaggle-url", "http://127.0.0.1:9", "--quiet"])
    assert code == 1
    assert "is in fold 7, but cnn has no model of that fold" in capsys.readouterr().err
    for output, extra, problem in (("p.npz", [], "add --top-k K"),
                                   ("p.npy", ["--top-k", "3"], "name the output PREDS.npz")):
        assert main(["fanout", str(config), "--images", str(competition / "test"), "-o",
                     str(tmp_path / output), "--kaggle-url", "http://127.0.0.1:9", "--quiet",
                     *extra]) == 1
        assert problem in capsys.readouterr().err
    for flag in ("--max-running", "--rows-per-shard", "--models-per-shard"):
        with pytest.raises(SystemExit):
            make_parser().parse_args(["fanout", str(config), "--images", "x", "-o", "p.npy",
                                      flag, "0"])
        assert "must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        make_parser().parse_args(["serve-kaggle", "-p", "s", "--workers", "0"])
    assert "must be at least 1" in capsys.readouterr().err


def test_the_service_runs_kernels_side_by_side_with_workers(tmp_path):
    body = ("import time\nprint('start', time.time(), flush=True)\ntime.sleep(2)\n"
            "print('end', time.time(), flush=True)\n")
    with service_world(tmp_path, workers=2) as world:
        for n in range(2):
            pushed = world.kernelpack("kernel", "push",
                                      str(tiny_kernel(tmp_path / f"k{n}", f"side-{n}", body)))
            assert pushed.returncode == 0, pushed
        spans = []
        for n in range(2):
            world.service.runner.wait_idle()
            log = world.stored("kernels", USER, f"side-{n}", "1", "run", "kernel.log")
            times = {line.split()[0]: float(line.split()[1])
                     for line in log.read_text().splitlines()
                     if line.startswith(("start", "end"))}
            spans.append((times["start"], times["end"]))
    # Both ran at once: each started before the other ended.
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], spans


def test_one_worker_runs_them_one_after_the_other(tmp_path):
    from kernelpack.kaggle.service.run_queue import Runner

    runner = Runner(0.0, tmp_path, workers=1)
    spans = []
    for _ in range(2):
        runner.submit(lambda: spans.append((time.monotonic(), time.sleep(0.3),
                                            time.monotonic())))
    runner.wait_idle()
    runner.stop()
    assert spans[1][0] >= spans[0][2]
    with pytest.raises(ValueError, match="workers must be 1 or more"):
        Runner(0.0, tmp_path, workers=0)
    shutil.rmtree(tmp_path, ignore_errors=True)
