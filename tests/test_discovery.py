import shutil

import pytest
import torch

from inference_core import model_config, preprocess
from inference_core.checkpoint import save_checkpoint
from inference_core.config import EnsembleConfig
from inference_core.discovery import (
    DiscoveryError,
    check_missing,
    match_models,
    scan_input_roots,
)
from inference_core.model_factory import create_model
from inference_core.preprocess import validate_preprocess
from inference_core.runner import discover, load_ensemble
from kernelpack.weights.encrypt import encrypt_checkpoint

KEY = bytes(range(32))


def _checkpoint(path, name, fold, seed=0):
    torch.manual_seed(seed)
    model = create_model("small_cnn", num_classes=3, width=4)
    return save_checkpoint(path, "small_cnn", 3, {"name": name, "fold": fold, "input_size": 32,
                                                  "model_kwargs": {"width": 4}}, model)


def _models(*entries):
    return EnsembleConfig.from_dict({"models": list(entries), "test": {"images": "t"},
                                     "submission": {"format": "multiclass"}})


@pytest.fixture
def kaggle_input(tmp_path):
    """Today's layouts, with file names that say nothing about the models inside."""
    root = tmp_path / "input"
    plain = _checkpoint(tmp_path / "src" / "a.pt", "cnn", 0)
    (root / "my-models" / "v2" / "deep").mkdir(parents=True)
    encrypt_checkpoint(plain, KEY, root / "my-models" / "v2" / "deep" / "weights.kpenc")
    _checkpoint(root / "models" / "me" / "digits" / "pytorch" / "default" / "3" / "model.pt",
                "cnn", 1, seed=1)
    _checkpoint(root / "competitions" / "digits" / "baseline" / "cnn_f0.pt", "baseline", 0,
                seed=2)
    (root / "junk").mkdir()
    (root / "junk" / "broken.pt").write_bytes(b"not a checkpoint")
    torch.save({"model": create_model("small_cnn", num_classes=3, width=4)},
               root / "junk" / "pickled.pt")  # a whole pickled model: refused, not run
    (root / "junk" / "loop").symlink_to(root)  # a symlink loop must not hang the scan
    return root


def test_finds_models_by_identity_in_every_layout(kaggle_input, tmp_path):
    found, unreadable = scan_input_roots([str(tmp_path / "absent"), str(kaggle_input)])
    by_place = {f.relative: (f.name, f.fold, f.encrypted) for f in found}
    assert by_place == {
        "competitions/digits/baseline/cnn_f0.pt": ("baseline", 0, False),
        "models/me/digits/pytorch/default/3/model.pt": ("cnn", 1, False),
        "my-models/v2/deep/weights.kpenc": ("cnn", 0, True),
    }
    assert [path for path, _ in unreadable] == ["junk/broken.pt", "junk/pickled.pt"]
    assert "weights_only=True" in dict(unreadable)["junk/pickled.pt"]

    discovery = match_models(_models({"name": "cnn", "fold": 0}, {"name": "baseline", "fold": 5}),
                             found, unreadable)
    assert discovery.matched["cnn"].relative == "my-models/v2/deep/weights.kpenc"
    assert discovery.missing == ["baseline"]  # there is a baseline, but of fold 0
    report = discovery.report()
    assert "MISSING  baseline" in report
    assert "unused   competitions/digits/baseline/cnn_f0.pt (baseline, fold 0)" in report
    assert "unused   models/me/digits/pytorch/default/3/model.pt (cnn, fold 1)" in report
    assert "skipped  junk/broken.pt" in report


def test_the_same_root_twice_is_scanned_once(kaggle_input):
    found, _ = scan_input_roots([str(kaggle_input), str(kaggle_input / ".." / "input")])
    assert len(found) == 3


def test_a_file_name_does_not_make_an_identity(kaggle_input):
    found, _ = scan_input_roots([str(kaggle_input)])
    discovery = match_models(_models({"name": "cnn_f0"}, {"name": "baseline"}), found)
    assert discovery.missing == ["cnn_f0"]  # the file called cnn_f0.pt holds "baseline"
    assert discovery.matched["baseline"].relative.endswith("baseline/cnn_f0.pt")


def test_identical_copies_are_reported_and_the_first_is_used(kaggle_input):
    source = kaggle_input / "competitions" / "digits" / "baseline" / "cnn_f0.pt"
    (kaggle_input / "another-dataset").mkdir()
    shutil.copy(source, kaggle_input / "another-dataset" / "copy.pt")
    found, _ = scan_input_roots([str(kaggle_input)])
    discovery = match_models(_models({"name": "baseline"}), found)
    assert discovery.matched["baseline"].relative == "another-dataset/copy.pt"
    assert "copies   baseline" in discovery.report()


def test_different_files_with_one_identity_must_be_disambiguated(kaggle_input):
    found, _ = scan_input_roots([str(kaggle_input)])
    with pytest.raises(DiscoveryError) as info:
        match_models(_models({"name": "cnn"}), found)
    message = str(info.value)
    assert "models[0] 'cnn': 2 different files match" in message
    assert "add fold, sha256 or path to models[0]" in message and "\n" not in message
    by_path = match_models(_models({"name": "cnn", "path": "models/me/digits/pytorch/default/"
                                                           "3/model.pt"}), found)
    assert by_path.matched["cnn"].fold == 1
    sha = found[1].sha256 if found[1].relative.startswith("models/") else found[2].sha256
    by_hash = match_models(_models({"name": "cnn", "sha256": sha}), found)
    assert by_hash.matched["cnn"].relative.startswith("models/")


def test_todays_layout_is_walked_and_a_path_named_by_slug_matches_it(kaggle_input, tmp_path):
    _checkpoint(kaggle_input / "datasets" / "alice" / "cnn-models" / "f2.pt", "cnn", 2, seed=3)
    _checkpoint(kaggle_input / "notebooks" / "bob" / "trainer" / "out" / "f3.pt", "cnn", 3, seed=4)
    found, _ = scan_input_roots([str(kaggle_input)])
    assert {f.relative: f.fold for f in found if f.name == "cnn"} == {
        "datasets/alice/cnn-models/f2.pt": 2, "models/me/digits/pytorch/default/3/model.pt": 1,
        "my-models/v2/deep/weights.kpenc": 0, "notebooks/bob/trainer/out/f3.pt": 3}
    # The config names each by its slug, never by the owner or the layout's folders.
    for path, fold in (("cnn-models/f2.pt", 2), ("trainer/out/f3.pt", 3),
                       ("digits/pytorch/default/3/model.pt", 1),
                       ("datasets/alice/cnn-models/f2.pt", 2)):
        assert match_models(_models({"name": "cnn", "path": path}), found).matched["cnn"].fold \
            == fold
    assert match_models(_models({"name": "cnn", "path": "alice/cnn-models/f2.pt"}),
                        found).missing == ["cnn"]


def test_a_missing_required_model_stops_the_kernel_and_an_optional_one_does_not(kaggle_input):
    found, _ = scan_input_roots([str(kaggle_input)])
    optional = _models({"name": "baseline"}, {"name": "ghost"})
    check_missing(match_models(optional, found), optional)
    required = _models({"name": "baseline"}, {"name": "ghost", "required": True})
    with pytest.raises(DiscoveryError, match=r"required model\(s\) ghost not found"):
        check_missing(match_models(required, found), required)
    nothing = _models({"name": "ghost"})
    with pytest.raises(DiscoveryError, match="none of the config's models was found"):
        check_missing(match_models(nothing, found), nothing)


def test_a_checkpoint_with_a_bad_config_is_skipped_with_the_field_named(tmp_path):
    root = tmp_path / "input"
    good = _checkpoint(root / "ds" / "good.pt", "cnn", 0)
    checkpoint = torch.load(good, weights_only=True)
    checkpoint["config"]["fodl"] = 1  # a typo must not silently drop the fold
    torch.save(checkpoint, root / "ds" / "typo.pt")
    found, unreadable = scan_input_roots([str(root)])
    assert [(f.relative, f.name, f.fold) for f in found] == [("ds/good.pt", "cnn", 0)]
    assert unreadable == [("ds/typo.pt", "config.fodl: unknown field; did you mean 'fold'?")]


def test_each_config_is_read_and_its_preprocessing_checked_once_from_scan_to_load(
        kaggle_input, monkeypatch):
    checked_at = []

    def counting(config, where):
        checked_at.append(where)
        return validate_preprocess(config, where)

    # Under both names: any reader, through ModelConfig or straight through preprocess, counts.
    monkeypatch.setattr(model_config, "validate_preprocess", counting)
    monkeypatch.setattr(preprocess, "validate_preprocess", counting)
    config = _models({"name": "cnn", "folds": [0, 1]})
    discovery = discover(config, [str(kaggle_input)], lambda line: None)
    ensemble = load_ensemble(config, discovery, KEY, lambda line: None)
    assert [member.name for member in ensemble.members] == ["cnn_f0", "cnn_f1"]
    assert all(member.preprocess.input_size == 32 for member in ensemble.members)
    loaded = {"my-models/v2/deep/weights.kpenc", "models/me/digits/pytorch/default/3/model.pt"}
    assert loaded <= set(checked_at)
    assert sorted(checked_at) == sorted(set(checked_at))  # each file once



@pytest.mark.parametrize("required", [False, True])
def test_a_damaged_kpenc_is_treated_as_a_damaged_pt_is(kaggle_input, required):
    """Tampering shows only when a .kpenc is decrypted, after discovery: an optional model is
    left out with a warning there too, a required one stops the kernel."""
    from inference_core.kpenc import KpencDamagedError

    encrypted = kaggle_input / "my-models" / "v2" / "deep" / "weights.kpenc"
    data = bytearray(encrypted.read_bytes())
    data[-40] ^= 0xFF  # inside the last chunk: the header still reads
    encrypted.write_bytes(bytes(data))
    config = _models({"name": "cnn", "folds": [0, 1], "required": required})
    lines = []
    discovery = discover(config, [str(kaggle_input)], lines.append)
    assert "cnn_f0" in discovery.matched  # its header reads: found
    if required:
        with pytest.raises(KpencDamagedError, match="fails authentication"):
            load_ensemble(config, discovery, KEY, lines.append)
        return
    ensemble = load_ensemble(config, discovery, KEY, lines.append)
    assert [member.name for member in ensemble.members] == ["cnn_f1"]
    assert any(line.startswith("WARNING ") and "fails authentication" in line
               and "the optional model cnn fold 0 is left out" in line for line in lines)


def test_when_every_model_is_damaged_the_kernel_stops_naming_the_first(kaggle_input):
    from inference_core.errors import CheckpointError

    encrypted = kaggle_input / "my-models" / "v2" / "deep" / "weights.kpenc"
    data = bytearray(encrypted.read_bytes())
    data[-40] ^= 0xFF
    encrypted.write_bytes(bytes(data))
    config = _models({"name": "cnn", "fold": 0})
    discovery = discover(config, [str(kaggle_input)], lambda line: None)
    with pytest.raises(CheckpointError, match="no model could be loaded, every one is damaged"):
        load_ensemble(config, discovery, KEY, lambda line: None)
