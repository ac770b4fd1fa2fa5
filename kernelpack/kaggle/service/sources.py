"""A kernel's data sources: checked at push (the real service drops invalid ones and says so) and
mounted read-only for a run under `input/` (see run_queue), the way Kaggle lays out /kaggle/input
today (the old flat layout, every source at `input/<slug>`, with `flat`):

- dataset `owner/slug` -> `input/datasets/owner/slug` (flat: `input/slug`), its newest READY
  version;
- competition `slug` -> `input/competitions/slug` (flat: `input/slug`), from
  `ROOT/competitions/slug/data`; a code submission's rerun mounts `hidden/` there instead, and
  every other source as the version ran with it;
- kernel `owner/slug` -> `input/notebooks/owner/slug` (flat: `input/slug`), the `working/` output
  of its newest COMPLETE version;
- model `owner/model/framework/variation/version` ->
  `input/models/owner/model/framework/variation/version` (flat: without `models/owner/`), that
  READY version of a pushed model, see models.py; the framework lower-cased, `pytorch`.

A source whose mount point would lie inside another's, or hold it (flat: a model `digits` under a
dataset `digits`), is dropped as invalid: one folder cannot be both.
"""

from __future__ import annotations

from pathlib import Path

from .datasets import Datasets
from .models import Models
from .store import Store
from .wire import ApiError

COMPLETE = "COMPLETE"
# Source field of ApiSaveKernelRequest -> the response field that lists the ones dropped.
INVALID_FIELDS = {"datasetDataSources": "invalidDatasetSources",
                  "competitionDataSources": "invalidCompetitionSources",
                  "kernelDataSources": "invalidKernelSources",
                  "modelDataSources": "invalidModelSources"}
# Source field -> the folder under input/ that holds its kind of source today, by owner.
_KIND_FOLDERS = {"datasetDataSources": "datasets", "kernelDataSources": "notebooks",
                 "modelDataSources": "models"}


def competition_dir(store: Store, slug: str) -> Path | None:
    try:
        folder = store.path("competitions", slug)
    except ApiError:
        return None
    return folder if (folder / "competition.json").is_file() else None


def _at(point: str, folder: Path | None) -> tuple[str, Path] | None:
    return None if folder is None else (point, folder)


def _nests(point: str, mounts: dict[str, Path]) -> bool:
    """`point` lies inside another mount point, or holds one."""
    return any(other != point and (other.startswith(f"{point}/") or point.startswith(f"{other}/"))
               for other in mounts)


def mount_point(field: str, ref: str, flat_point: str) -> str:
    """Where Kaggle mounts the source `ref` (of request field `field`) today, given its mount
    point in the flat layout (`slug`, or a model's `model/framework/variation/version`)."""
    if field == "competitionDataSources":
        return f"competitions/{flat_point}"
    return f"{_KIND_FOLDERS[field]}/{ref.split('/')[0]}/{flat_point}"


class Sources:
    def __init__(self, store: Store, datasets: Datasets, models: Models,
                 flat: bool = False) -> None:
        self.store = store
        self.datasets = datasets
        self.models = models
        self.flat = flat        # mount as Kaggle did before: every source at input/<slug>

    def _dataset(self, ref: str, user: str) -> Path | None:
        owner, _, slug = ref.partition("/")
        try:
            return self.datasets.latest_ready(owner, slug, user)
        except ApiError:
            return None

    def _competition(self, slug: str) -> Path | None:
        folder = competition_dir(self.store, slug)
        return None if folder is None else folder / "data"

    def _kernel(self, ref: str, user: str) -> Path | None:
        owner, _, slug = ref.partition("/")
        try:
            record = self.store.record("kernel", owner, slug, user)
        except ApiError:
            return None
        done = [v for v in record["versions"] if v["status"] == COMPLETE]
        if not done:
            return None
        return self.store.path("kernels", owner, slug, str(done[-1]["number"]), "run", "working")

    def resolve(self, version: dict, user: str
                ) -> tuple[dict[str, Path], dict[str, list[str]]]:
        """(mount point under input/ -> folder, invalid sources by response field)."""
        mounts: dict[str, Path] = {}
        invalid: dict[str, list[str]] = {}
        # Each finder: ref -> (flat mount point, folder), or None for a source that is not there.
        kinds = (("datasetDataSources", lambda r: _at(r.split("/")[-1], self._dataset(r, user))),
                 ("competitionDataSources", lambda r: _at(r, self._competition(r))),
                 ("kernelDataSources", lambda r: _at(r.split("/")[-1], self._kernel(r, user))),
                 ("modelDataSources", lambda r: self.models.ready_version(r, user)))
        for field, find in kinds:
            for ref in version.get(field, []):
                found = find(ref)
                if found is not None and not self.flat:
                    found = mount_point(field, ref, found[0]), found[1]
                if found is None or _nests(found[0], mounts):
                    invalid.setdefault(INVALID_FIELDS[field], []).append(ref)
                else:
                    mounts[found[0]] = found[1]
        return mounts, invalid

    def mounts(self, version: dict, user: str) -> tuple[dict[str, Path], dict[str, str]]:
        """A run's sources (mount point -> folder) and the same relative to the service root,
        kept with the version so that a rerun uses the very same folders."""
        mounts, _ = self.resolve(version, user)
        return mounts, {point: str(folder.relative_to(self.store.root))
                        for point, folder in mounts.items()}

    def rerun_mounts(self, version: dict) -> dict[str, Path]:
        """The folders the version ran with, each competition's hidden test set in place of its
        data: a code submission reruns the kernel as it ran, on the hidden test set."""
        mounts = {point: self.store.root / folder for point, folder in version["mounts"].items()}
        for slug in version.get("competitionDataSources", []):
            folder = competition_dir(self.store, slug)
            if folder is not None and (folder / "hidden").is_dir():
                # Wherever the version's run had the data mounted, whichever layout it ran in.
                for point in [p for p, source in mounts.items() if source == folder / "data"]:
                    mounts[point] = folder / "hidden"
        return mounts
