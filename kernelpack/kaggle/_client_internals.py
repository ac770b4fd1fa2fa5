"""Everything that depends on the kaggle client's (and kagglesdk's) private parts, in one place.

The client reads its settings once, at import, into class attributes, and kagglesdk has no
setting for its endpoint; reaching past both is what lets one process sign in as another user or
talk to a local service. Those parts change between releases, so this module refuses, at import,
any kaggle or kagglesdk version it was not tested with.
"""

from __future__ import annotations

import io
import os
import sys
from contextlib import redirect_stdout
from functools import cache
from importlib import metadata

from ..errors import KaggleError, KaggleUploadError

# The versions this module was tested with (setup.cfg pins them).
TESTED_VERSIONS = {"kaggle": ("2.2.4",), "kagglesdk": ("0.1.37",)}
# Set to 1 to try an untested version anyway (e.g. to test a new release).
UNTESTED_ENV = "KERNELPACK_UNTESTED_KAGGLE"


def untested_versions(installed: dict[str, str | None]) -> str | None:
    """Why these installed versions ({"kaggle": "2.2.4", ...}) are refused, or None."""
    wrong = [f"{name} {installed.get(name) or '(not installed)'}"
             for name, tested in TESTED_VERSIONS.items() if installed.get(name) not in tested]
    if not wrong:
        return None
    pin = " ".join(f"{name}=={tested[-1]}" for name, tested in TESTED_VERSIONS.items())
    tested = ", ".join(f"{name} {' or '.join(versions)}"
                       for name, versions in TESTED_VERSIONS.items())
    return (f"{' and '.join(wrong)} installed, but kernelpack is tested with {tested} only (it "
            f"relies on the client's private parts, which change between releases); install "
            f"the tested ones with `pip install {pin}`, or set {UNTESTED_ENV}=1 to try these")


def _installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


_problem = untested_versions({name: _installed_version(name) for name in TESTED_VERSIONS})
if _problem and os.environ.get(UNTESTED_ENV) != "1":
    raise KaggleError(_problem)


def config_dir() -> str:
    """Where the client looks for kaggle.json, read now (the client reads it once, at import)."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return os.environ["KAGGLE_CONFIG_DIR"]
    legacy = os.path.join(os.path.expanduser("~"), ".kaggle")
    if sys.platform.startswith("linux") and not os.path.exists(legacy):
        xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
        return os.path.join(xdg, "kaggle")
    return legacy


@cache
def routed_api_class() -> type:
    """KaggleApi that reads its settings when built (not at import) and can send every call to
    another endpoint."""
    # `import kaggle` authenticates a module-level client and prints auth help to stdout.
    with redirect_stdout(io.StringIO()):
        from kaggle.api.kaggle_api_extended import KaggleApi

    class RoutedKaggleApi(KaggleApi):
        def __init__(self, url: str | None) -> None:
            super().__init__()
            self.url = url
            # The client keeps these as class attributes, read once when kaggle was imported.
            self.config_dir = config_dir()
            self.config = os.path.join(self.config_dir, self.config_file)
            self.config_values = {}
            self.args = ["--local"] if os.environ.get("KAGGLE_API_ENVIRONMENT") == "LOCALHOST" \
                else []

        def build_kaggle_client(self):  # type: ignore[no-untyped-def]
            client = super().build_kaggle_client()
            if self.url:
                # kagglesdk has no endpoint setting; its HTTP client keeps the base URL here.
                client._http_client._endpoint = self.url
            return client

        def _upload_file(self, file_name, full_path, *args, **kwargs):  # type: ignore[no-untyped-def]
            # kaggle 2.2.4 skips a file whose upload failed and still creates the version
            # (2.2.5 raises instead); failing here stops it before the create call, with its
            # resume state kept.
            try:
                uploaded = super()._upload_file(file_name, full_path, *args, **kwargs)
            except ValueError as exc:
                if not str(exc).startswith("Upload unsuccessful"):
                    raise
                uploaded = None
            if uploaded is None:
                raise KaggleUploadError(f"{full_path}: upload failed, so no version was created; "
                                        "run the same push again to resume it")
            return uploaded

    return RoutedKaggleApi


def signed_in_username(api) -> str:  # type: ignore[no-untyped-def]
    """The user name the client signed in with ('' for a token without one)."""
    return api.config_values.get(api.CONFIG_NAME_USER, "")
