"""kernelpack fan-out shard: one piece of `kernelpack predict --per-model` run as a Kaggle kernel.

Rendered by `kernelpack fanout` (kernelpack/fanout/shard_kernel.py) and bundled with
inference_core, like the submission kernel's entry; standard library and inference_core only. SHARD
says what this kernel computes: the members (checkpoint labels, each with its weight in the
whole ensemble and the SHA-256 of the checkpoint the host hashed), the rows (ids and image files
under the images folder `images`, found in any of Kaggle's input layouts), and whether the
shard's blend is wanted. It runs the runtime's own pieces exactly as `kernelpack predict` does
(`discover`, `load_members`, `prepared_batches`, `EnsemblePredictor.predict`), without a budget,
and writes to the working folder:

- `member-<i>.npy`: member i's views combined, without its threshold shift (float64, rows x
  classes), what `predict --per-model` keeps of it; out of fold with `top_k`, instead
  `member-<i>.indices.npy` (int32) and `member-<i>.probabilities.npy` (float64), rows x k: each
  row's k best classes of its entry's value (a fold model's own, a plain entry's blend of its
  one model), reduced batch by batch as `predict --top-k` does, so that neither the kernel nor
  the download holds rows x classes;
- `blend.npy` and `weight.npy` (when asked): the shard's members blended as the kernel blends
  them, and each row's blend weight, so the host can add shards of other members to it; on test
  rows with `top_k` (the shard then holds every model) instead `entry-<j>.indices.npy` /
  `.probabilities.npy`, entry j's blend of its models, and `blend.indices.npy` /
  `.probabilities.npy`, the whole blend, each row's k best classes;
- `shard.json` last: the manifest (ids, members, each file's shape, dtype and SHA-256), which
  the host checks before it uses anything.

A checkpoint whose SHA-256 is not the one the host hashed fails the run: a stale model dataset
never becomes a silently different prediction.
"""

import json
import sys
import time
from pathlib import Path

# Filled in by `kernelpack fanout`; the defaults only let this module be imported and tested.
SHARD = json.loads("{}")  # kernelpack: fill
CONFIG = json.loads("{}")  # kernelpack: fill
KEY = None  # kernelpack: fill
USER_CODE = []  # kernelpack: fill

MANIFEST = "shard.json"
FORMAT = 1


def _log(line: str) -> None:
    print(line, flush=True)


def _save(array, path: Path) -> dict:
    """`array` to `path` whole or not at all; its entry in the manifest."""
    import numpy as np

    from inference_core.files import atomic_write, sha256_file

    with atomic_write(path, "wb") as handle:
        np.save(handle, array)
    return {"file": path.name, "shape": list(array.shape), "dtype": str(array.dtype),
            "sha256": sha256_file(path)}


def _test_rows(config, shard: dict):
    """The shard's rows as a TestSet: its image files under the images folder, found in any of
    Kaggle's input layouts."""
    from inference_core.data import TestSet, find_input_root
    from inference_core.errors import TestSetError
    from inference_core.inputs import find_input

    root = find_input_root(config.input_roots)
    images = find_input(root, shard["images"])
    _log(images.describe("fanout images"))
    folder = images.path
    paths = [folder / name for name in shard["files"]]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise TestSetError(f"{len(missing)} of the shard's {len(paths)} images are missing from "
                           f"{folder} (first: {missing[0]}); attach the dataset or competition "
                           "that holds the images the host predicted")
    return TestSet(ids=list(shard["ids"]), paths=paths, folder=folder)


def _members(config, shard: dict, key):
    """The shard's members, loaded, each at its weight in the whole ensemble; every checkpoint
    is the one the host hashed."""
    from inference_core.discovery import DiscoveryError
    from inference_core.runner import discover, load_members

    discovery = discover(config, config.input_roots, _log)
    found = {}
    for member in shard["members"]:
        label = member["label"]
        location = discovery.matched.get(label)
        if location is None:
            raise DiscoveryError(f"model {label} not found under {', '.join(config.input_roots)}"
                                 "; attach the dataset or Model that holds it")
        if location.sha256 != member["sha256"]:
            raise DiscoveryError(f"model {label} ({location.relative}) has SHA-256 "
                                 f"{location.sha256[:16]}..., not {member['sha256'][:16]}... as "
                                 "on the host: the attached copy is stale; push the model "
                                 "dataset again, then rerun the fan-out")
        found[label] = location
    members = load_members(config, found, key, _log)
    weights = {member["label"]: member["weight"] for member in shard["members"]}
    for member in members:
        # load_members splits a folds group's weight over the folds it was given; the host
        # knows the folds of the whole ensemble.
        member.weight = weights[member.name]
    if [member.name for member in members] != list(weights):
        raise DiscoveryError(f"loaded {[m.name for m in members]}, but the shard is "
                             f"{list(weights)}; check the models' weights in the config")
    return members


def _entry_blend(probs, weights, mode: str):
    """An entry's value: its models blended on their own, without threshold shifts, as
    `predict --per-model` blends an entry (a plain entry's one model too: for gmean, clipped and
    through the log)."""
    from inference_core.blend import BlendAccumulator

    accumulator = BlendAccumulator(*probs[0].shape, mode=mode)
    for p, weight in zip(probs, weights, strict=True):
        accumulator.add(p, float(weight))
    return accumulator.result()


def _top_k_parts(shard: dict, mode: str) -> list:
    """What a top-k shard sends, each as (kind, number, label, value of a batch): out of fold,
    each member's rows (a fold model's own values, a plain entry's blend of its one model); on
    test rows (the shard holds every model), each entry's blend and the whole blend."""
    specs = shard["members"]
    if not shard.get("blend"):
        return [("member", j, spec["label"],
                 (lambda per_member, _, j=j: per_member[j]) if spec.get("fold") is not None
                 else (lambda per_member, _, j=j, w=spec["weight"]:
                       _entry_blend([per_member[j]], [w], mode)))
                for j, spec in enumerate(specs)]
    groups = list(dict.fromkeys(spec["group"] for spec in specs))
    parts = []
    for number, group in enumerate(groups):
        chosen = [j for j, spec in enumerate(specs) if spec["group"] == group]
        parts.append(("entry", number, group,
                      lambda per_member, _, chosen=chosen: _entry_blend(
                          [per_member[j] for j in chosen], [specs[j]["weight"] for j in chosen],
                          mode)))
    return [*parts, ("blend", 0, "blend", lambda _, accumulator: accumulator.result())]


def run_shard(shard: dict, raw_config: dict, key, working=".") -> dict:
    """Compute the shard, write its arrays and then its manifest into `working`; the manifest."""
    began = time.monotonic()
    import numpy as np
    import torch

    from inference_core.blend import BlendAccumulator
    from inference_core.budget import rank_units
    from inference_core.config import EnsembleConfig
    from inference_core.errors import KernelError
    from inference_core.files import atomic_write
    from inference_core.predict import EnsemblePredictor
    from inference_core.runner import prepared_batches

    config = EnsembleConfig.from_dict(raw_config)
    test_set = _test_rows(config, shard)
    members = _members(config, shard, key)
    predictor = EnsemblePredictor(members, config.precision, tta_blend=config.tta_blend,
                                  compile_mode=config.compile, class_chunk=config.class_chunk)
    every_view = set(rank_units([(m.name, m.weight, m.tta, m.group, m.value) for m in members]))
    n_rows, n_classes = len(test_set), members[0].num_classes
    top_k = shard.get("top_k")
    if top_k:
        from inference_core.top_k import TopKRows

        parts = _top_k_parts(shard, config.blend)
        tops = [TopKRows(n_rows, top_k, n_classes) for _ in parts]
    member_probs = [np.full((0 if top_k else n_rows, n_classes), np.nan) for _ in members]
    blend = np.full((0 if top_k else n_rows, n_classes), np.nan)  # top-k: lists only
    weight = np.zeros(n_rows)
    _log(f"shard {shard['name']}: {len(members)} models x {n_rows} images, "
         f"{predictor.describe()}")
    done = 0
    with torch.inference_mode():
        for (begin, end), prepared in prepared_batches(predictor, test_set, config,
                                                       first=config.batch_size):
            if prepared.errors:
                raise KernelError(f"{prepared.errors[0]}; a fan-out shard writes no fallback "
                                  "rows: fix or remove that image")
            accumulator = BlendAccumulator(end - begin, n_classes, config.blend)
            per_member = {m: np.full((end - begin, n_classes), np.nan) if top_k else
                          probs[begin:end] for m, probs in enumerate(member_probs)}
            predictor.predict(prepared, every_view, accumulator, per_member=per_member)
            if top_k:
                for (_, _, _, value), lists in zip(parts, tops, strict=True):
                    lists.put(begin, value(per_member, accumulator))
            weight[begin:end] = accumulator.row_weight
            if not top_k:
                blended = np.flatnonzero(accumulator.row_weight > 0)
                blend[begin + blended] = accumulator.result(blended)
            done += end - begin
            _log(f"predicted {done}/{n_rows} images")
    working = Path(working)
    working.mkdir(parents=True, exist_ok=True)
    manifest = {"format": FORMAT, "shard": shard["name"], "ids": list(test_set.ids),
                "num_classes": n_classes, "members": []}
    if top_k:
        manifest["members"] = [{"label": member.name} for member in members]
        for (kind, number, label, _), lists in zip(parts, tops, strict=True):
            stem = kind if kind == "blend" else f"{kind}-{number}"
            arrays = {"indices": _save(lists.result.indices, working / f"{stem}.indices.npy"),
                      "probabilities": _save(lists.result.probabilities,
                                             working / f"{stem}.probabilities.npy")}
            if kind == "member":
                manifest["members"][number].update(arrays)
            elif kind == "entry":
                manifest.setdefault("entries", []).append({"group": label, **arrays})
            else:
                manifest["blend"] = arrays
    else:
        for index, (member, probs) in enumerate(zip(members, member_probs, strict=True)):
            entry = _save(probs, working / f"member-{index}.npy")
            manifest["members"].append({"label": member.name, **entry})
        if shard.get("blend"):
            manifest["blend"] = _save(blend, working / "blend.npy")
            manifest["weight"] = _save(weight, working / "weight.npy")
    manifest.update(seconds=round(time.monotonic() - began, 3), torch=torch.__version__,
                    device=predictor.describe())
    # The manifest last: a run stopped before this line has no manifest, and is no output.
    with atomic_write(working / MANIFEST, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle)
    _log(f"shard {shard['name']} written in {manifest['seconds']:.1f} s")
    return manifest


def start_and_run(shard: dict, raw_config: dict, key, user_code: list) -> int:
    """Install attached wheel datasets, import the user's code, run the shard; the exit code (a
    failure is one `kernel error:` line on stderr and exit code 1)."""
    from inference_core.errors import KernelError
    from inference_core.wheel_install import install_wheel_datasets

    try:
        install_wheel_datasets(raw_config.get("input_roots"), log=_log)
        if user_code:
            from inference_core.model_factory import import_modules

            import_modules(user_code)
        run_shard(shard, raw_config, key)
    except KernelError as exc:
        print(f"kernel error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":  # the bundle runs its entry as __main__
    status = start_and_run(SHARD, CONFIG, KEY, USER_CODE)
    if status:
        sys.exit(status)
