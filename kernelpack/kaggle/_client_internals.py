"""Everything that depends on the kaggle client's (and kagglesdk's) private parts, in one place.

The client reads its settings once, at import, into class attributes, and kagglesdk has no
setting for its endpoint; reaching past both is what lets one process sign in as another user or
talk to a local service. Those parts change between releases, so before the first client is made
this module checks for each *feature* it uses (a class attribute, a method and the parameters it
is called with, where kagglesdk keeps its endpoint), not for one version string: a client that
lacks any is refused with one line naming each missing feature, and a release outside the range
tested (`TESTED`) runs, after one warning line.
"""

from __future__ import annotations

import fnmatch
import inspect
import io
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from functools import cache
from importlib import metadata
from typing import Any

from ..errors import KaggleError, KaggleUploadError
from ..progress import byte_bar

# The oldest and newest releases the Kaggle tests (tests/test_kaggle_*.py, the real client
# against the local service) passed with; setup.cfg's range starts at the oldest, and
# constraints.txt holds the pair this project's own environment runs.
TESTED = {"kaggle": ("2.1.1", "2.2.5"), "kagglesdk": ("0.1.28", "0.1.38")}
# What a user whose client lacks a feature installs (setup.cfg's kaggle range).
INSTALL_TESTED = "pip install 'kaggle>=2.1.1,<3'"
# The client's public calls kernelpack makes (kernelpack/kaggle/*.py).
PUBLIC_CALLS = (
    "authenticate", "competition_submit_code", "dataset_create_new", "dataset_create_version",
    "dataset_list_files", "dataset_status", "kernels_logs", "kernels_output", "kernels_push",
    "kernels_status", "model_create_new", "model_get", "model_instance_create",
    "model_instance_get", "model_instance_version_create", "model_instance_version_files",
)
# The calls kernelpack passes `ignore_patterns` to (kaggle 2.2.4 added it; for an older client
# the routed client skips those files itself).
UPLOAD_CALLS = ("dataset_create_new", "dataset_create_version", "model_instance_create",
                "model_instance_version_create")
API_MODULE = "kaggle.api.kaggle_api_extended"
log = logging.getLogger(__name__)


def _version_key(version: str) -> tuple[int, ...]:
    """(2, 2, 4) for "2.2.4" (a pre-release or local suffix counts as its release)."""
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


def _installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def installed_versions() -> dict[str, str | None]:
    return {name: _installed_version(name) for name in TESTED}


def untested_note(installed: dict[str, str | None]) -> str | None:
    """The warning line for versions ({"kaggle": "2.3.0", ...}) outside the tested range, or
    None when every one lies inside it."""
    outside = []
    for name, (oldest, newest) in TESTED.items():
        version = installed.get(name)
        if version is None:
            continue
        key = _version_key(version)
        if key > _version_key(newest):
            outside.append(f"{name} {version} is newer than the newest tested ({newest})")
        elif key < _version_key(oldest):
            outside.append(f"{name} {version} is older than the oldest tested ({oldest})")
    if not outside:
        return None
    return (f"kernelpack: warning: {' and '.join(outside)}; it has every client feature "
            "kernelpack uses, so it runs, but an error from the client may be this version's")


def _parameters(function: object) -> list[str]:
    try:
        return list(inspect.signature(function).parameters)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return []


def _takes(function: object, *names: str) -> bool:
    """A callable whose parameters include `names` (after self)."""
    return callable(function) and set(names) <= set(_parameters(function))


def _starts_with(function: object, *names: str) -> bool:
    """A callable whose first parameters (after self) are `names`, in order."""
    return callable(function) and _parameters(function)[1:1 + len(names)] == list(names)


def _importable(module: str, *names: str) -> bool:
    try:
        imported = __import__(module, fromlist=list(names))
    except ImportError:
        return False
    return all(hasattr(imported, name) for name in names)


def _sdk_endpoint() -> bool:
    """kagglesdk's HTTP client keeps its base URL in `_http_client._endpoint` (a new client
    reads its settings only, it sends nothing)."""
    try:
        from kagglesdk.kaggle_client import KaggleClient

        return isinstance(getattr(KaggleClient()._http_client, "_endpoint", None), str)
    except Exception:  # any failure here is the feature missing
        return False


def _sdk_call(module: str, client: str, method: str, request: str) -> bool:
    services, types = module.replace("{}", "services"), module.replace("{}", "types")
    if not _importable(types, request):
        return False
    try:
        return callable(getattr(getattr(__import__(services, fromlist=[client]), client), method))
    except (ImportError, AttributeError):
        return False


def client_features(api: type) -> list[tuple[str, Callable[[], bool]]]:
    """Each feature kernelpack uses beyond the client's documented surface: (how a missing one
    is named, its check), for `api` (kaggle.api.kaggle_api_extended.KaggleApi)."""
    upload_filter = all(_takes(getattr(api, name, None), "ignore_patterns")
                        for name in UPLOAD_CALLS)
    return [
        ("KaggleApi.config_file, config_dir and CONFIG_NAME_USER (the settings the client reads "
         "at import, re-read for each session)",
         lambda: all(hasattr(api, name) for name in ("config_file", "config_dir",
                                                     "CONFIG_NAME_USER"))),
        *((f"KaggleApi.{name}()", lambda name=name: callable(getattr(api, name, None)))
          for name in PUBLIC_CALLS),
        ("KaggleApi.build_kaggle_client() (where the endpoint is set)",
         lambda: callable(getattr(api, "build_kaggle_client", None))),
        ("KaggleApi.with_retry(method, max_retries=)",
         lambda: _takes(getattr(api, "with_retry", None), "max_retries")),
        ("KaggleApi.dataset_status(dataset, format=) (a dataset's version number, kaggle 2.1.1+)",
         lambda: _takes(getattr(api, "dataset_status", None), "format")),
        ("KaggleApi.upload_complete(path, url, quiet, resume) (the upload byte bar)",
         lambda: _starts_with(getattr(api, "upload_complete", None), "path", "url", "quiet",
                              "resume")),
        ("KaggleApi._upload_file(file_name, full_path, ...) (a failed upload stops the push)",
         lambda: _starts_with(getattr(api, "_upload_file", None), "file_name", "full_path")),
        ("ignore_patterns= of the dataset and model uploads, or KaggleApi._upload_file_or_folder("
         "parent_path, file_or_folder_name, ...) to skip kernelpack's manifest without it",
         lambda: upload_filter or _starts_with(getattr(api, "_upload_file_or_folder", None),
                                               "parent_path", "file_or_folder_name")),
        ("kagglesdk KaggleClient._http_client._endpoint (kagglesdk has no endpoint setting)",
         _sdk_endpoint),
        ("kagglesdk KernelsApiClient.get_kernel(ApiGetKernelRequest)",
         lambda: _sdk_call("kagglesdk.kernels.{}.kernels_api_service", "KernelsApiClient",
                           "get_kernel", "ApiGetKernelRequest")),
        ("kagglesdk CompetitionApiClient.get_submission(ApiGetSubmissionRequest)",
         lambda: _sdk_call("kagglesdk.competitions.{}.competition_api_service",
                           "CompetitionApiClient", "get_submission", "ApiGetSubmissionRequest")),
    ]


def missing_features(api: type) -> list[str]:
    """The features `api` (and the installed kagglesdk) lack, named; empty when all are there."""
    return [name for name, present in client_features(api) if not present()]


def check_client(api: type, installed: dict[str, str | None] | None = None) -> None:
    """Refuse a client without a feature kernelpack uses (KaggleError naming each); warn, in one
    line, about one outside the tested range."""
    installed = installed_versions() if installed is None else installed
    versions = " / ".join(f"{name} {version or '(version unknown)'}"
                          for name, version in installed.items())
    missing = missing_features(api)
    if missing:
        raise KaggleError(f"the installed client ({versions}) lacks what kernelpack uses from "
                          f"it: {'; '.join(missing)}; install a tested one with "
                          f"`{INSTALL_TESTED}`")
    note = untested_note(installed)
    if note:
        log.warning(note)


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
def client_resumes_uploads() -> bool:
    """Whether the client resumes an upload an earlier push left: its check must find the saved
    request equal to the new one. kaggle 2.1.x compares the two request objects by identity,
    so it never resumes (it starts every file afresh); 2.2 compares their fields."""
    try:
        from kaggle.api.kaggle_api_extended import ResumableFileUpload, ResumableUploadContext
        from kagglesdk.blobs.types.blob_api_service import ApiStartBlobUploadRequest

        context = ResumableUploadContext(no_resume=True)  # touches no file

        def upload() -> Any:
            request = ApiStartBlobUploadRequest()
            request.name = "probe"
            return ResumableFileUpload("probe", request, context)

        return bool(upload()._is_previous_valid(upload()))
    except Exception:  # any other shape of the client's internals: promise no resume
        return False


@cache
def routed_api_class() -> type:
    """KaggleApi that reads its settings when built (not at import) and can send every call to
    another endpoint."""
    # `import kaggle` authenticates a module-level client and prints auth help to stdout; kaggle
    # 2.1 then exits where it finds no credentials, with its API module loaded already (the
    # session's own sign-in says what is missing).
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        try:
            from kaggle.api import kaggle_api_extended
        except ImportError as exc:  # e.g. a kaggle whose kagglesdk is too old for it
            raise KaggleError(f"the installed kaggle client does not import ({exc}); install a "
                              f"tested one with `{INSTALL_TESTED}`") from None
        except SystemExit:
            kaggle_api_extended = sys.modules.get(API_MODULE)  # type: ignore[assignment]
            if kaggle_api_extended is None:
                raise KaggleError(f"`import kaggle` exited before it loaded {API_MODULE}; "
                                  f"reinstall the client with `{INSTALL_TESTED}`") from None
    KaggleApi = kaggle_api_extended.KaggleApi
    check_client(KaggleApi)

    class RoutedKaggleApi(KaggleApi):
        # The byte bar that uploaded files advance (see `reporting_uploads`), and where the
        # file being uploaded starts on it.
        upload_bar: Any = None
        _file_start = 0
        # File name patterns an upload call of a client without `ignore_patterns` skips here.
        _skipped: tuple[str, ...] = ()

        def __init__(self, url: str | None) -> None:
            super().__init__()
            self.url = url
            # The client keeps these as class attributes, read once when kaggle was imported.
            self.config_dir = config_dir()
            self.config = os.path.join(self.config_dir, self.config_file)
            self.config_values = {}
            self.args = ["--local"] if os.environ.get("KAGGLE_API_ENVIRONMENT") == "LOCALHOST" \
                else []

        def with_retry(self, func, *args, **kwargs):  # type: ignore[no-untyped-def]
            # Before kaggle 2.2.4 the retried call passes on positional arguments only: each
            # call's arguments travel packed in one.
            retried = super().with_retry(lambda call: func(*call[0], **call[1]), *args, **kwargs)
            return lambda *call_args, **call_kwargs: retried((call_args, call_kwargs))

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
            context = kwargs.get("upload_context", args[1] if len(args) > 1 else None)
            stale = self._resume_state(full_path, context)
            uploaded = self._upload_or_none(file_name, full_path, *args, **kwargs)
            if uploaded is None and stale is not None:
                # The state an earlier, interrupted push left names an upload the service no
                # longer takes (expired, swept, claimed, or another service's): resuming it
                # never works, and kept it would fail every later push. Start the file afresh.
                if os.path.exists(stale):
                    os.remove(stale)
                uploaded = self._upload_or_none(file_name, full_path, *args, **kwargs)
            if uploaded is None:
                again = "run the same push again to resume it" if self._resumable(context) \
                    else ("run the same push again (this kaggle client cannot resume an "
                          "upload: the file is sent again from its start)")
                raise KaggleUploadError(f"{full_path}: upload failed, so no version was created; "
                                        f"{again}")
            if bar is not None:  # also a file sent by an earlier, interrupted push
                bar.update(self._file_start + os.path.getsize(full_path) - bar.n)
            return uploaded

        def _upload_or_none(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            """The client's upload of one file; None when it failed (as 2.2.4 answers)."""
            try:
                return super()._upload_file(*args, **kwargs)
            except ValueError as exc:
                if not str(exc).startswith("Upload unsuccessful"):
                    raise
                return None

        @staticmethod
        def _resumable(context: Any) -> bool:
            """Whether the next push can resume this upload: the client keeps resume state,
            and its check accepts the state an earlier push saved."""
            return getattr(context, "get_upload_info_file_path", None) is not None \
                and not getattr(context, "no_resume", False) and client_resumes_uploads()

        @staticmethod
        def _resume_state(full_path: str, context: Any) -> str | None:
            """The resume state file an earlier push of `full_path` left, if there is one."""
            if not RoutedKaggleApi._resumable(context):
                return None
            path = context.get_upload_info_file_path(full_path)
            return path if os.path.isfile(path) else None

        def _upload_file_or_folder(  # type: ignore[no-untyped-def]
                self, parent_path, file_or_folder_name, *args, **kwargs):
            if any(fnmatch.fnmatch(file_or_folder_name, pattern) for pattern in self._skipped):
                return None  # as the client does with ignore_patterns since 2.2.4
            return super()._upload_file_or_folder(parent_path, file_or_folder_name, *args,
                                                  **kwargs)

    for name in UPLOAD_CALLS:
        if not _takes(getattr(KaggleApi, name), "ignore_patterns"):
            setattr(RoutedKaggleApi, name, _skipping_here(getattr(KaggleApi, name)))
    return RoutedKaggleApi


def _skipping_here(upload: Callable[..., Any]) -> Callable[..., Any]:
    """`upload` (an upload call of a client older than `ignore_patterns`) taking
    `ignore_patterns` all the same: the routed client's `_upload_file_or_folder` skips them."""

    def call(self, *args: Any, ignore_patterns: list[str] | None = None, **kwargs: Any) -> Any:
        self._skipped = tuple(ignore_patterns or ())
        try:
            return upload(self, *args, **kwargs)
        finally:
            self._skipped = ()

    call.__name__ = upload.__name__
    return call


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
