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
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from functools import cache
from importlib import metadata
from typing import Any

from ..errors import KaggleError, KaggleUploadError
from ..progress import byte_bar

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
        from kaggle.api import kaggle_api_extended
        from kaggle.api.kaggle_api_extended import KaggleApi

    class RoutedKaggleApi(KaggleApi):
        # The byte bar that uploaded files advance (see `reporting_uploads`), and where the
        # file being uploaded starts on it.
        upload_bar: Any = None
        _file_start = 0

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

        @contextmanager
        def reporting_uploads(self, total: int, desc: str, enabled: bool) -> Iterator[None]:
            """Within: the files the client uploads advance one byte bar of `total` bytes on
            stderr, byte by byte (the client's own per-file bar, which would be drawn into its
            captured output, is replaced by a stand-in that moves this one)."""
            with byte_bar(total, desc, enabled) as bar:
                self.upload_bar = bar if enabled else None
                try:
                    yield
                finally:
                    self.upload_bar = None

        def upload_complete(self, path, url, quiet, resume=False):  # type: ignore[no-untyped-def]
            bar = self.upload_bar
            own_bar = getattr(kaggle_api_extended, "tqdm", None)
            if bar is None or own_bar is None:  # no bar, or a client that draws none itself:
                return super().upload_complete(path, url, quiet, resume)  # a step per file
            # The client counts the bytes it sends on a tqdm bar of its own, built inside this
            # method; built here instead, it moves ours. Its total is what is left to send, so
            # a resumed or retried upload starts from where the file stands.
            file_end = self._file_start + os.path.getsize(path)

            def client_bar(total: int = 0, **_: Any) -> _BarSegment:
                return _BarSegment(bar, file_end - total)

            kaggle_api_extended.tqdm = client_bar
            try:
                return super().upload_complete(path, url, quiet, resume)
            finally:
                kaggle_api_extended.tqdm = own_bar

        def _upload_file(self, file_name, full_path, *args, **kwargs):  # type: ignore[no-untyped-def]
            bar = self.upload_bar
            self._file_start = bar.n if bar is not None else 0
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
            if bar is not None:  # also a file sent by an earlier, interrupted push
                bar.update(self._file_start + os.path.getsize(full_path) - bar.n)
            return uploaded

    return RoutedKaggleApi


class _BarSegment:
    """Stands in for the client's per-file tqdm bar: moves `bar` from `start`, by the bytes the
    client reports sent."""

    def __init__(self, bar: Any, start: int) -> None:
        self.bar = bar
        bar.update(start - bar.n)

    def __enter__(self) -> _BarSegment:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, count: int) -> None:
        self.bar.update(count)


def signed_in_username(api) -> str:  # type: ignore[no-untyped-def]
    """The user name the client signed in with ('' for a token without one)."""
    return api.config_values.get(api.CONFIG_NAME_USER, "")
