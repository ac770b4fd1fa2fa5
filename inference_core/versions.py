"""Version drift: the packages that made a model's pixels and outputs, as recorded when its
checkpoint was imported, against the ones running it now.

A preprocessing pipeline and a model are code from libraries whose defaults change between
versions (albumentations 2.x pads with 0 where 0.x reflected; timm renames and reshapes layers),
so the same checkpoint can predict differently on Kaggle's image than where it was validated.
`kernelpack import-checkpoint` records `recorded_versions()` in the checkpoint config
(`versions`); the kernel (and `kernelpack predict`) logs one line naming each package whose
version here differs (`drift_warning`), so the difference is visible in Kaggle's log viewer and
`predict --compare` can show its effect. Only packages imported here are compared: a package
the run never imported cannot have changed its pixels.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

# The packages whose versions decide a model's input pixels and outputs, by import name.
PACKAGES = ("torch", "numpy", "PIL", "cv2", "albumentations", "timm")
# How the drift line starts (host `predict` picks it out of its log by it).
DRIFT_PREFIX = "WARNING version drift:"


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str]:
    """`{import name: __version__}` of the packages among `names` imported in this process."""
    versions = {}
    for name in names:
        version = getattr(sys.modules.get(name), "__version__", None)
        if isinstance(version, str):
            versions[name] = str(version)  # a plain str: torch's is a subclass pickled as such
    return versions


def recorded_versions() -> dict[str, str]:
    """What a checkpoint records once its model was built and its preprocessing run."""
    return package_versions()


def drift(recorded: Mapping[str, str], here: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """`{package: (recorded version, version here)}` for each package both know, that differs."""
    return {name: (version, here[name]) for name, version in recorded.items()
            if name in here and here[name] != version}


def drift_warning(models: Sequence[tuple[str, Mapping[str, str] | None]],
                  here: Mapping[str, str] | None = None) -> str | None:
    """One log line naming each package whose version here differs from the one recorded with
    the models (`(name, versions)` pairs; None for a checkpoint that recorded none), and which
    models recorded it; None when nothing differs."""
    here = package_versions() if here is None else here
    changed: dict[tuple[str, str], list[str]] = {}
    for name, recorded in models:
        for package, (then, _) in drift(recorded or {}, here).items():
            changed.setdefault((package, then), []).append(name)
    if not changed:
        return None
    parts = [f"{package} {then} -> {here[package]} ({', '.join(names)})"
             for (package, then), names in sorted(changed.items())]
    return (f"{DRIFT_PREFIX} {'; '.join(parts)}: recorded when imported -> here; the pixels or "
            "outputs may differ from training, check on the host with kernelpack predict "
            "--compare")
