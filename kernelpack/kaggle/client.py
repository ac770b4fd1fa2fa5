"""Kaggle through the official client (`kaggle.api.KaggleApi`), made safe to script.

The client prints to stdout, reports some failures with exit code 0, authenticates (and prints) at
import time and calls `exit()` from library code. Here every call runs with its output captured
and its failures turned into typed errors with a fix in the message; nothing is reported as pushed
that is not verified to be there.

`KaggleSession(url)` sends every call of the client to `url` (a local service started with
`kernelpack serve-kaggle`) instead of Kaggle; without `url`, `KERNELPACK_KAGGLE_URL` is used, and
without that, Kaggle itself. Credentials are found as the client finds them: `kaggle.json` in
`KAGGLE_CONFIG_DIR` (or ~/.kaggle), `KAGGLE_USERNAME` + `KAGGLE_KEY`, or `KAGGLE_API_TOKEN`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import time
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ..build import embeds_key
from ..errors import KaggleAuthError, KaggleError, KaggleNotFoundError, KaggleUploadError

URL_ENV = "KERNELPACK_KAGGLE_URL"
DATASET_METADATA = "dataset-metadata.json"
KERNEL_METADATA = "kernel-metadata.json"
# What was last pushed and verified from a dataset folder; lets an unchanged folder skip the
# upload. It lives in the folder and is never uploaded.
MANIFEST_FILE = ".kernelpack-manifest.json"
# Files the client never uploads from a dataset folder (kaggle-api.md §3.4), plus our manifest.
_NOT_DATA = {DATASET_METADATA, "datapackage.json", KERNEL_METADATA, "model-metadata.json",
             "model-instance-metadata.json", MANIFEST_FILE}
_FINISHED = {"COMPLETE", "ERROR", "CANCEL_ACKNOWLEDGED"}
# Attempts for calls safe to repeat: the client's default of 10 spends over two minutes backing
# off before it reports a service that is down.
READ_RETRIES = 4


@dataclass
class DatasetPush:
    ref: str
    version: int | None
    uploaded: list[str]
    skipped: bool       # unchanged since the last verified push: nothing uploaded
    verified: bool      # every local file is listed by the service with its size


@dataclass
class KernelPush:
    ref: str
    version: int
    url: str
    status: str | None = None     # set when waited for


@dataclass
class Submission:
    ref: int
    status: str
    public_score: str | None = None
    private_score: str | None = None
    error: str | None = None
    kernel_version: int | None = None


def _config_dir() -> str:
    """Where the client looks for kaggle.json, read now (the client reads it once, at import)."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return os.environ["KAGGLE_CONFIG_DIR"]
    legacy = os.path.join(os.path.expanduser("~"), ".kaggle")
    if sys.platform.startswith("linux") and not os.path.exists(legacy):
        xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
        return os.path.join(xdg, "kaggle")
    return legacy


@cache
def _api_class() -> type:
    # `import kaggle` authenticates a module-level client and prints auth help to stdout.
    with redirect_stdout(io.StringIO()):
        from kaggle.api.kaggle_api_extended import KaggleApi

    class RoutedKaggleApi(KaggleApi):
        """KaggleApi that reads its settings when built and can talk to another endpoint."""

        def __init__(self, url: str | None) -> None:
            self.url = url
            self.config_dir = _config_dir()
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
            # The client skips a file whose upload failed and still creates the version;
            # failing here stops it before the create call (its resume state is kept).
            uploaded = super()._upload_file(file_name, full_path, *args, **kwargs)
            if uploaded is None:
                raise KaggleUploadError(f"{full_path}: upload failed, so no version was created; "
                                        "run the same push again to resume it")
            return uploaded

    return RoutedKaggleApi


def _http_hint(status: int) -> str:
    if status == 401:
        return "the credentials were refused; check kaggle.json or KAGGLE_USERNAME/KAGGLE_KEY"
    if status == 403:
        return "access denied; check that you own it, or accept the competition's rules"
    if status == 404:
        return "check the id (owner/slug) and that it was pushed"
    if status == 429:
        return "rate limited even after the client's retries; wait a minute and run it again"
    if status >= 500:
        return "a problem on the service's side; run it again later"
    return "the service refused the request"


def _connection_problem(error: Exception) -> str:
    text = str(error)
    if "refused" in text:
        return "connection refused"
    if "RemoteDisconnected" in text or "aborted" in text or "reset" in text:
        return "the connection was dropped"
    return type(error).__name__


def file_digest(path: Path) -> dict:
    with open(path, "rb") as stream:
        return {"size": path.stat().st_size,
                "sha256": hashlib.file_digest(stream, "sha256").hexdigest()}


def _is_true(value: Any) -> bool:
    """kernel-metadata.json booleans, read as the client reads them (strings allowed)."""
    return value.lower() == "true" if isinstance(value, str) else bool(value)


class KaggleSession:
    """One authenticated client; every method raises KaggleError (or a subclass) on failure."""

    def __init__(self, url: str | None = None, *, poll_seconds: float = 5.0) -> None:
        self.url = (url or os.environ.get(URL_ENV) or "").rstrip("/") or None
        self.poll_seconds = poll_seconds
        self.api = _api_class()(self.url)
        self.call("sign-in", self.api.authenticate)
        self.username: str = self.api.config_values.get("username", "")

    @property
    def where(self) -> str:
        return self.url or "Kaggle"

    def call(self, what: str, method: Callable[..., Any], *args: Any, retry: bool = False,
             **kwargs: Any) -> Any:
        """Run one client method quietly; `retry` adds the client's own retry (429 with
        Retry-After, dropped connections) for calls that are safe to repeat."""
        import requests

        function = self.api.with_retry(method, max_retries=READ_RETRIES) if retry else method
        try:
            with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
                return function(*args, **kwargs)
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            error = KaggleNotFoundError if status == 404 else KaggleError
            raise error(f"{what}: {self.where} answered {status}: {exc}; "
                        f"{_http_hint(status)}") from None
        except requests.ConnectionError as exc:
            raise KaggleError(f"{what}: no answer from {self.where} ({_connection_problem(exc)}"
                              f"); check that it is up (and --kaggle-url / {URL_ENV}), then "
                              "run it again") from None
        except ValueError as exc:
            raise KaggleError(f"{what}: {exc}") from None
        except (KeyError, AttributeError, TypeError) as exc:
            # The client crashes this way on answers it did not expect (e.g. a missing status).
            raise KaggleError(f"{what}: unexpected answer from {self.where} "
                              f"({type(exc).__name__}: {exc})") from None
        except SystemExit:     # the client's authenticate() exits when it finds nothing
            raise KaggleAuthError(
                f"{what}: no Kaggle credentials found: put kaggle.json (Account > API > Create "
                f"New Token) in {self.api.config_dir}/ with mode 600, or set KAGGLE_USERNAME and "
                "KAGGLE_KEY, or KAGGLE_API_TOKEN") from None

    # Datasets

    def dataset_exists(self, ref: str) -> bool:
        try:
            self.call(f"{ref}: dataset status", self.api.dataset_status, ref, retry=True)
        except KaggleNotFoundError:
            return False
        return True

    def dataset_status(self, ref: str) -> str:
        """`ready`, `blobs_received`, ..., as the client names DatabundleVersionStatus."""
        return self.call(f"{ref}: dataset status", self.api.dataset_status, ref, retry=True)

    def dataset_files(self, ref: str) -> dict[str, int]:
        """Name -> size of every file the service lists for the newest ready version."""
        files: dict[str, int] = {}
        token = None
        while True:
            page = self.call(f"{ref}: dataset files", self.api.dataset_list_files, ref,
                             page_token=token, retry=True)
            files.update({item.name: item.total_bytes for item in page.files or []})
            token = page.next_page_token
            if not token:
                return files

    def wait(self, what: str, check: Callable[[], Any], timeout: float, later: str) -> Any:
        """Poll `check` until it returns something other than None, backing off from a quarter
        second to `poll_seconds` (the client does not retry these polls on its own)."""
        deadline = time.monotonic() + timeout
        delay = 0.25
        while (result := check()) is None:
            if time.monotonic() > deadline:
                raise KaggleError(f"{what}: not finished after {timeout:g} s; {later}")
            time.sleep(delay)
            delay = min(delay * 1.5, self.poll_seconds)
        return result

    def wait_dataset(self, ref: str, timeout: float) -> None:
        def ready() -> bool | None:
            status = self.dataset_status(ref)
            if status in ("failed", "deleted"):
                raise KaggleError(f"{ref}: the new version ended {status} on {self.where}; "
                                  "push again")
            return True if status == "ready" else None

        self.wait(f"{ref}: new version", ready, timeout,
                  f"check later with `kaggle datasets status {ref}`")

    def push_dataset(self, folder: str | Path, *, public: bool = False,
                     message: str | None = None, wait: bool = False,
                     dataset_id: str | None = None, title: str | None = None,
                     timeout: float = 3600.0) -> DatasetPush:
        """Create the dataset or add a version; with `wait`, wait until it is ready and check that
        every local file is listed with its size. An unchanged folder (same files as the last
        verified push, still listed by the service) is skipped."""
        folder = Path(folder)
        files = local_dataset_files(folder)
        metadata = dataset_metadata(folder, dataset_id, title, default_owner=self.username)
        ref = metadata["id"]
        local = {path.name: file_digest(path) for path in files}
        manifest_path = folder / MANIFEST_FILE
        previous = _read_manifest(manifest_path)
        exists = self.dataset_exists(ref)
        if exists and previous and previous.get("id") == ref and previous["files"] == local \
                and self.dataset_files(ref) == {n: d["size"] for n, d in local.items()}:
            return DatasetPush(ref, previous["version"], [], skipped=True, verified=True)
        options = {"quiet": True, "ignore_patterns": [MANIFEST_FILE]}
        if exists:
            answer = self.call(f"{ref}: new dataset version", self.api.dataset_create_version,
                               str(folder), message or "pushed with kernelpack", **options)
        else:
            answer = self.call(f"{ref}: dataset create", self.api.dataset_create_new,
                               str(folder), public=public, **options)
        if (answer.status or "").lower() != "ok":
            raise KaggleError(f"{ref}: {self.where} refused the dataset: {answer.error}; fix "
                              f"{folder / DATASET_METADATA} and push again")
        version = json.loads(self.call(f"{ref}: dataset version", self.api.dataset_status, ref,
                                       format="json(current_version_number)", retry=True)
                             )["current_version_number"]
        push = DatasetPush(ref, version, sorted(local), skipped=False, verified=False)
        if not wait:
            return push
        self.wait_dataset(ref, timeout)
        self.verify_dataset(ref, local)
        manifest_path.write_text(json.dumps({"id": ref, "version": version, "files": local},
                                            indent=1, sort_keys=True) + "\n")
        push.verified = True
        return push

    def verify_dataset(self, ref: str, local: dict[str, dict]) -> None:
        listed = self.dataset_files(ref)
        wrong = [f"{name} ({'missing' if name not in listed else f'{listed[name]} bytes'}, "
                 f"expected {digest['size']})"
                 for name, digest in sorted(local.items()) if listed.get(name) != digest["size"]]
        if wrong:
            raise KaggleUploadError(f"{ref}: the new version lacks or truncates "
                                    f"{', '.join(wrong)}; push again")

    # Kernels

    def push_kernel(self, folder: str | Path, *, wait: bool = False,
                    timeout: float = 9 * 3600.0) -> KernelPush:
        """Push a folder written by `kernelpack build`; with `wait`, wait for the run to end."""
        folder = Path(folder)
        metadata_path = folder / KERNEL_METADATA
        if not metadata_path.is_file():
            raise KaggleError(f"{metadata_path}: not found; run `kernelpack build CONFIG -o "
                              f"{folder}` first")
        try:
            metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise KaggleError(f"{metadata_path}: not valid JSON ({exc}); build the kernel "
                              "again") from None
        ref = metadata.get("id") or ""
        if ref.startswith("INSERT_USERNAME/"):
            raise KaggleError(f"{metadata_path}: id is {ref!r} because kernel.id is not set; set "
                              "kernel.id: your-username/kernel-slug in the config's kernel "
                              "section and build again")
        code = folder / metadata.get("code_file", "kernel.py")
        if code.is_file() and embeds_key(code) and not _is_true(metadata.get("is_private", True)):
            raise KaggleError(f"{code}: embeds a decryption key but {metadata_path} has "
                              "is_private: false; set kernel.is_private: true and build again")
        answer = self.call(f"{ref}: kernel push", self.api.kernels_push, str(folder))
        if answer.error:
            raise KaggleError(f"{ref}: {self.where} refused the push: {answer.error}")
        dropped = {kind: refs for kind, refs in (
            ("dataset", answer.invalid_dataset_sources),
            ("competition", answer.invalid_competition_sources),
            ("kernel", answer.invalid_kernel_sources),
            ("model", answer.invalid_model_sources)) if refs}
        if dropped:
            listing = "; ".join(f"{kind} sources {refs}" for kind, refs in dropped.items())
            raise KaggleError(f"{ref}: version {answer.version_number} was pushed, but "
                              f"{self.where} dropped {listing}; push those first (or fix the "
                              "ids in the config's kernel section), then push again")
        push = KernelPush(ref, answer.version_number, answer.url)
        if wait:
            push.status = self.wait_kernel(ref, timeout)
        return push

    def kernel_status(self, ref: str) -> tuple[str, str | None]:
        """(status name, failure message) of the kernel's newest version."""
        answer = self.call(f"{ref}: kernel status", self.api.kernels_status, ref, retry=True)
        return answer.status.name, answer.failure_message or None

    def wait_kernel(self, ref: str, timeout: float) -> str:
        def finished() -> tuple[str, str | None] | None:
            status = self.kernel_status(ref)
            return status if status[0] in _FINISHED else None

        status, failure = self.wait(f"{ref}: run", finished, timeout,
                                    f"check later with `kernelpack kernel status {ref}`")
        if status != "COMPLETE":
            raise KaggleError(f"{ref}: the run ended {status}: {failure}; see "
                              f"`kernelpack kernel logs {ref}`")
        return status

    def kernel_logs(self, ref: str) -> str:
        """The run's log as text (the service sends a JSON array of stream records)."""
        log = self.call(f"{ref}: kernel logs", self.api.kernels_logs, ref, retry=True)
        try:
            records = json.loads(log)
        except ValueError:
            return log
        if not isinstance(records, list):
            return log
        return "".join(str(record.get("data", "")) for record in records
                       if isinstance(record, dict))

    def kernel_output(self, ref: str, path: str | Path) -> list[Path]:
        """Download the run's output files (and its log) into `path`."""
        files, _ = self.call(f"{ref}: kernel output", self.api.kernels_output, ref, str(path),
                             force=True, quiet=True, retry=True)
        return [Path(name) for name in files]

    def kernel_version(self, ref: str) -> int:
        from kagglesdk.kernels.types.kernels_api_service import ApiGetKernelRequest

        owner, _, slug = ref.partition("/")
        request = ApiGetKernelRequest()
        request.user_name, request.kernel_slug = owner, slug
        with self.api.build_kaggle_client() as client:
            answer = self.call(f"{ref}: kernel", client.kernels.kernels_api_client.get_kernel,
                               request, retry=True)
        return answer.metadata.current_version_number

    # Code competitions

    def submit(self, competition: str, kernel: str, *, version: int | None = None,
               file_name: str = "submission.csv", message: str | None = None,
               wait: bool = False, timeout: float = 9 * 3600.0) -> Submission:
        """Submit a kernel version's output to a code competition; with `wait`, wait for the
        rerun on the hidden test set and its score."""
        version = version or self.kernel_version(kernel)
        answer = self.call(f"{competition}: submit {kernel} version {version}",
                           self.api.competition_submit_code, file_name,
                           message or f"{kernel} version {version}", competition, kernel,
                           version, quiet=True)
        submission = Submission(answer.ref, "PENDING", kernel_version=version)
        if not wait:
            return submission
        submission = self.wait(
            f"{competition}: submission {answer.ref}",
            lambda: (None if (s := self.submission(answer.ref, version)).status == "PENDING"
                     else s),
            timeout, f"check later with `kaggle competitions submissions {competition}`")
        if submission.status != "COMPLETE":
            raise KaggleError(f"{competition}: submission {answer.ref} failed: "
                              f"{submission.error}")
        return submission

    def submission(self, ref: int, kernel_version: int | None = None) -> Submission:
        from kagglesdk.competitions.types.competition_api_service import ApiGetSubmissionRequest

        request = ApiGetSubmissionRequest()
        request.ref = ref
        with self.api.build_kaggle_client() as client:
            answer = self.call(f"submission {ref}",
                               client.competitions.competition_api_client.get_submission,
                               request, retry=True)
        return Submission(ref, answer.status.name, answer.public_score or None,
                          answer.private_score or None, answer.error_description or None,
                          kernel_version)


def _read_manifest(path: Path) -> dict | None:
    """The last verified push; an unreadable manifest only means the upload is not skipped."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and "files" in manifest else None


def local_dataset_files(folder: Path) -> list[Path]:
    """The files the client will upload from `folder`; sub-folders are refused, not skipped."""
    if not folder.is_dir():
        raise KaggleError(f"{folder}: not a folder; pass the folder that holds the dataset files")
    entries = sorted(p for p in folder.iterdir() if p.name not in _NOT_DATA)
    folders = [p.name for p in entries if p.is_dir()]
    if folders:
        raise KaggleError(f"{folder}: holds sub-folders {folders}, which the kaggle client does "
                          "not upload; move their files to the top level or zip them")
    if not entries:
        raise KaggleError(f"{folder}: no files to upload")
    return entries


def dataset_metadata(folder: Path, dataset_id: str | None, title: str | None, *,
                     default_owner: str) -> dict:
    """The folder's dataset-metadata.json; when absent, written from `dataset_id` (default:
    OWNER/FOLDER-NAME) and `title`."""
    path = folder / DATASET_METADATA
    if path.is_file():
        try:
            metadata = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise KaggleError(f"{path}: not valid JSON ({exc}); fix it or delete it to have it "
                              "written from --id/--title") from None
        if "/" not in str(metadata.get("id", "")):
            raise KaggleError(f"{path}: id must be 'owner/dataset-slug'; fix it")
        if dataset_id and metadata["id"] != dataset_id:
            raise KaggleError(f"{path}: id is {metadata['id']!r} but --id says {dataset_id!r}; "
                              "drop --id or fix the file")
        return metadata
    dataset_id = dataset_id or \
        f"{default_owner}/{folder.resolve().name.lower().replace('_', '-')}"
    slug = dataset_id.partition("/")[2]
    metadata = {"id": dataset_id, "title": title or slug.replace("-", " ").title(),
                "licenses": [{"name": "CC0-1.0"}]}
    path.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return metadata
