"""Each shard kernel attaches the sources that hold its own members' checkpoints and every source
that holds none (the competition, image datasets); a member whose source cannot be told makes its
shards attach everything. Placed from real folders laid out as Kaggle mounts them."""

from __future__ import annotations

import json
from pathlib import Path

from inference_core.discovery import FoundModel
from kernelpack.config import KernelSection
from kernelpack.fanout.sources import ShardSources, source_slug

KERNEL = KernelSection(competition_sources=("digits",),
                       dataset_sources=("alice/cnn-models", "alice/solo-models",
                                        "bob/wheels"),
                       model_sources=("alice/effnet/pytorch/b3/2",))


def _found(root: Path, relative: str) -> FoundModel:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"checkpoint")
    return FoundModel(path, relative, False, Path(relative).stem, None)


def test_a_source_is_mounted_under_its_slug():
    assert source_slug("competition_sources", "digits") == "digits"
    assert source_slug("dataset_sources", "alice/cnn-models") == "cnn-models"
    assert source_slug("model_sources", "alice/effnet/pytorch/b3/2") == "effnet"


def test_each_shard_attaches_its_members_sources_and_every_source_without_checkpoints(
        tmp_path):
    found = {"cnn_f0": _found(tmp_path, "cnn-models/cnn0.pt"),  # the flat layout
             "cnn_f1": _found(tmp_path, "datasets/alice/cnn-models/f1/cnn1.pt"),  # today's
             "solo": _found(tmp_path, "solo-models/solo.pt"),
             "effnet": _found(tmp_path, "models/alice/effnet/pytorch/b3/2/effnet.pt")}
    sources = ShardSources.locate(KERNEL, found, ["digits/test"])
    assert sources.for_shard(["cnn_f0"]) == {
        "competition_sources": ["digits"], "dataset_sources": ["alice/cnn-models", "bob/wheels"],
        "kernel_sources": [], "model_sources": []}
    assert sources.for_shard(["solo", "effnet"]) == {
        "competition_sources": ["digits"],
        "dataset_sources": ["alice/solo-models", "bob/wheels"], "kernel_sources": [],
        "model_sources": ["alice/effnet/pytorch/b3/2"]}
    assert "alice/cnn-models holds cnn_f0, cnn_f1" in sources.describe()


def test_a_pushed_folders_metadata_names_its_dataset_whatever_the_folders_are_called(
        tmp_path):
    weights = tmp_path / "my-weights"  # passed as --models: no slug in its paths
    found = {"solo": _found(weights, "round2/solo.pt"), "cnn_f0": _found(weights, "cnn0.pt")}
    (weights / "round2" / "dataset-metadata.json").write_text(
        json.dumps({"id": "alice/solo-models"}))
    (weights / "dataset-metadata.json").write_text(json.dumps({"id": "alice/cnn-models"}))
    sources = ShardSources.locate(KERNEL, found)
    assert sources.for_shard(["solo"])["dataset_sources"] == ["alice/solo-models",
                                                              "bob/wheels"]
    assert sources.for_shard(["cnn_f0"])["dataset_sources"] == ["alice/cnn-models",
                                                                "bob/wheels"]


def test_a_member_whose_source_is_not_known_attaches_every_source(tmp_path):
    found = {"cnn_f0": _found(tmp_path, "cnn-models/cnn0.pt"),
             "stray": _found(tmp_path / "elsewhere", "stray.pt")}
    sources = ShardSources.locate(KERNEL, found)
    every = {"competition_sources": ["digits"],
             "dataset_sources": ["alice/cnn-models", "alice/solo-models", "bob/wheels"],
             "kernel_sources": [], "model_sources": ["alice/effnet/pytorch/b3/2"]}
    assert sources.for_shard(["stray"]) == every
    assert sources.for_shard(["cnn_f0", "stray"]) == every
    # The others still leave out what holds only other members... of which there is none here.
    assert sources.for_shard(["cnn_f0"])["dataset_sources"] == ["alice/cnn-models",
                                                                "alice/solo-models",
                                                                "bob/wheels"]
    assert "every source for stray, whose source is not known" in sources.describe()


def test_a_source_the_shards_read_images_from_stays_attached_though_it_holds_checkpoints(
        tmp_path):
    found = {"cnn_f0": _found(tmp_path, "cnn-models/cnn0.pt"),
             "solo": _found(tmp_path, "solo-models/solo.pt")}
    sources = ShardSources.locate(KERNEL, found, ["solo-models/test-images"])
    assert sources.for_shard(["cnn_f0"])["dataset_sources"] == ["alice/cnn-models",
                                                                "alice/solo-models",
                                                                "bob/wheels"]
    assert sources.for_shard(["solo"])["dataset_sources"] == ["alice/solo-models",
                                                              "bob/wheels"]


def test_a_metadata_file_that_is_a_fifo_or_not_json_is_passed_over_not_waited_on(tmp_path):
    import os

    weights = tmp_path / "cnn-models"
    found = {"cnn_f0": _found(weights, "sub/cnn0.pt"), "solo": _found(weights, "solo.pt")}
    os.mkfifo(weights / "sub" / "dataset-metadata.json")  # reading it would block for ever
    (weights / "dataset-metadata.json").write_text("{not json")
    sources = ShardSources.locate(KERNEL, found)  # placed by the folder's name instead
    assert sources.holders == {("dataset_sources", "alice/cnn-models"): {"cnn_f0", "solo"}}
