"""The test set: find the input root, the test images and their ids.

The test ids come from the sample submission when the config names one (the order Kaggle scores
in), else from a glob over the test folder. Both are found in whichever of Kaggle's layouts their
source is mounted (see `inputs`). Decoding the images is `decode`'s job, preparing them for each
model `transforms`'.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .config import TestSection
from .errors import TestSetError
from .files import open_csv
from .inputs import find_input


@dataclass(frozen=True)
class TestSet:
    ids: list[str]
    paths: list[Path]
    folder: Path  # the test folder, where it was found
    sample_submission: Path | None = None  # where it was found, when the config names one

    __test__ = False  # not a pytest test class despite the name

    def __len__(self) -> int:
        return len(self.ids)


def find_input_root(roots: Sequence[str]) -> Path:
    """The first input root that exists (`/kaggle/input` on Kaggle, `../input` in the sandbox)."""
    for root in roots:
        if Path(root).is_dir():
            return Path(root)
    raise TestSetError(
        f"no input root found (tried {', '.join(roots)}); attach the competition and model "
        "datasets to the kernel, or set input_roots in the config"
    )


def resolve_test_set(test: TestSection, input_root: Path, id_column: str,
                     log: Callable[[str], None] | None = None) -> TestSet:
    """Ids and image paths of the test set described by the config's `test` section, its paths
    found in any of Kaggle's layouts under `input_root`; `log` gets a line saying where each was
    found. Raises InputLayoutError when a slug is mounted twice."""
    images = find_input(input_root, test.images)
    sample = find_input(input_root, test.sample_submission) if test.sample_submission else None
    if log is not None:
        log(images.describe("test.images"))
        if sample is not None:
            log(sample.describe("test.sample_submission"))
    folder = images.path
    if not folder.is_dir():
        raise TestSetError(
            f"test folder {test.images!r} not found under {input_root}; attach the competition "
            "data to the kernel or fix test.images in the config"
        )
    if sample is not None:
        ids = _ids_from_sample_submission(sample.path, id_column)
        paths = [image_file(folder, image_id, test.extension) for image_id in ids]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise TestSetError(
                f"{len(missing)} of {len(ids)} test images listed in {test.sample_submission} "
                f"are missing from {folder} (first: {missing[0]}); check test.extension"
            )
    else:
        paths = sorted(p for p in folder.glob(test.pattern) if p.is_file())
        if not paths:
            raise TestSetError(f"test folder {folder} has no files matching {test.pattern!r}; "
                               "fix test.pattern in the config")
        ids = [p.stem for p in paths]
    return TestSet(ids=ids, paths=paths, folder=folder,
                   sample_submission=sample.path if sample is not None else None)


def image_file(folder: Path, image_id: str, extension: str) -> Path:
    """An id's image in `folder`: the id itself when it names a file, else the id + extension."""
    exact = folder / image_id
    return exact if exact.suffix and exact.is_file() else folder / f"{image_id}{extension}"


def _ids_from_sample_submission(path: Path, id_column: str) -> list[str]:
    if not path.is_file():
        raise TestSetError(f"sample submission {path} not found; attach the competition data or "
                           "fix test.sample_submission in the config")
    try:
        with open_csv(path) as handle:
            reader = csv.DictReader(handle)
            if id_column not in (reader.fieldnames or []):
                raise TestSetError(f"{path}: no column {id_column!r} (columns: "
                                   f"{reader.fieldnames}); set submission.id_column in the config")
            return [row[id_column] for row in reader]
    except UnicodeDecodeError as exc:
        raise TestSetError(f"{path}: not UTF-8 text (byte {exc.start}); save the sample "
                           "submission as UTF-8") from None

