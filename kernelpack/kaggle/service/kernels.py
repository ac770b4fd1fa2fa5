"""Kernels: SaveKernel stores a version and queues its run; status, output and the log follow it.

Layout: `ROOT/kernels/OWNER/SLUG/kernel.json` (versions, their settings, sources and status) and
`ROOT/kernels/OWNER/SLUG/N/` (`kernel.py`, or `kernel.ipynb` for a notebook kernel, the mounted
`input/`, the sandbox `run/` with `kernel.log`, `working/` and a notebook's executed copy in
`notebook/`, listed among the outputs as `SLUG.ipynb`, as Kaggle lists it).
"""

from __future__ import annotations

import math
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from inference_core.config import KAGGLE_RUN_SECONDS

from ...kernel.notebook import EXECUTED_FOLDER, NOTEBOOK_FILE, parse_notebook
from .run_queue import Runner, RunStopped, log_as_json
from .sources import COMPLETE, INVALID_FIELDS, Sources
from .store import Store
from .wire import ApiError, check_name, timestamp

# Request fields kept with each version (ApiSaveKernelRequest, kaggle-api.md appendix A.1).
_SETTINGS = ("language", "kernelType", "isPrivate", "enableGpu", "enableTpu", "enableInternet",
             "machineShape", "sessionTimeoutSeconds", "datasetDataSources",
             "competitionDataSources", "kernelDataSources", "modelDataSources")
KERNEL_TYPES = ("script", "notebook")


def version_label(request: dict) -> int | None:
    """kaggle 2.2.5 sends `versionLabel: "vN"`; 2.2.4 sends nothing (the newest version)."""
    label = request.get("versionLabel")
    if not label:
        return None
    digits = label[1:] if label.startswith("v") else label
    if not digits.isdigit():
        raise ApiError(400, f"bad versionLabel {label!r}; expected vN")
    return int(digits)


def regular_file_in(folder: Path, path: Path) -> bool:
    """A file the run wrote in `folder`: not a link (a kernel could point one at anything the
    service can read), not outside it."""
    try:
        inside = path.resolve().is_relative_to(folder.resolve())
        return inside and not any(p.is_symlink() for p in (path, *path.parents)
                                  if p.is_relative_to(folder)) and path.is_file()
    except (OSError, ValueError):
        return False


def _check_save_request(request: dict) -> None:
    """The fields a run depends on have the types and ranges the real service allows."""
    for key in ("slug", "text", "language", "kernelType", "newTitle"):
        if request.get(key) is not None and not isinstance(request[key], str):
            raise ApiError(400, f"SaveKernel: {key} must be a string")
    for key in ("datasetDataSources", "competitionDataSources", "kernelDataSources",
                "modelDataSources"):
        refs = request.get(key, [])
        if not isinstance(refs, list) or not all(isinstance(ref, str) for ref in refs):
            raise ApiError(400, f"SaveKernel: {key} must be a list of strings")
    timeout = request.get("sessionTimeoutSeconds")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                or not math.isfinite(timeout)
                                or not 0 <= timeout <= KAGGLE_RUN_SECONDS):
        raise ApiError(400, f"SaveKernel: sessionTimeoutSeconds {timeout!r} must be a number of "
                            f"seconds from 0 to {KAGGLE_RUN_SECONDS}")


class Kernels:
    def __init__(self, store: Store, sources: Sources, runner: Runner,
                 sign: Callable[[str], str]) -> None:
        self.store = store
        self.sources = sources
        self.runner = runner
        self.sign = sign        # output links work without credentials, as signed links do
        # (owner, slug, version) -> fields its record could not take (the disk was full): they
        # are answered from here and written with the kernel's next record, so that a run still
        # ends (ERROR, with its reason) for a client waiting on it.
        self._unsaved: dict[tuple[str, str, int], dict] = {}

    def record(self, owner: str, slug: str, user: str) -> dict:
        return self._with_unsaved(owner, slug, self.store.record("kernel", owner, slug, user))

    def _with_unsaved(self, owner: str, slug: str, record: dict | None) -> dict | None:
        for (o, s, number), fields in list(self._unsaved.items()):
            if record is not None and (o, s) == (owner, slug) \
                    and number <= len(record["versions"]):
                record["versions"][number - 1].update(fields)
        return record

    def _write(self, record: dict, owner: str, slug: str) -> None:
        """Write a kernel's record (with what earlier writes could not take); raises OSError."""
        self.store.write(record, "kernels", owner, slug, "kernel.json")
        for key in [key for key in self._unsaved if key[:2] == (owner, slug)]:
            del self._unsaved[key]

    def version(self, record: dict, number: int | None) -> dict:
        if not record["versions"]:
            raise ApiError(404, f"kernel {record['ref']} has no versions")
        if number is None:
            return record["versions"][-1]
        if not 1 <= number <= len(record["versions"]):
            raise ApiError(404, f"kernel {record['ref']} has no version {number}")
        return record["versions"][number - 1]

    def folder(self, ref: str, number: int) -> Path:
        return self.store.path("kernels", *ref.split("/"), str(number))

    def save(self, user: str, request: dict, base_url: str) -> dict:
        _check_save_request(request)
        owner, _, slug = request.get("slug", "").partition("/")
        if request.get("id") is not None and not slug:
            raise ApiError(400, "pushing by id_no is not supported here; set id: owner/slug")
        check_name(owner, "kernel owner")
        check_name(slug, "kernel slug")
        if owner != user:
            raise ApiError(403, f"user {user} cannot push kernels for {owner}")
        if request.get("language") != "python" or request.get("kernelType") not in KERNEL_TYPES:
            return {"error": "the local service runs python scripts and notebooks only "
                             "(language: python, kernel_type: script or notebook)"}
        # What the kaggle client sends for a notebook: its JSON.
        if request["kernelType"] == "notebook" and parse_notebook(request.get("text")) is None:
            return {"error": "the notebook is not valid notebook JSON (an object with a list "
                             "of cells); push the .ipynb file that `kernelpack build "
                             "--notebook` wrote"}
        version = {key: request[key] for key in _SETTINGS if key in request}
        _, invalid = self.sources.resolve(version, user)
        for key, invalid_key in INVALID_FIELDS.items():   # the real service drops what it rejects
            dropped = set(invalid.get(invalid_key, []))
            version[key] = [ref for ref in version.get(key, []) if ref not in dropped]
        with self.store.lock:
            record = self._with_unsaved(owner, slug, self.store.read(
                "kernels", owner, slug, "kernel.json")) or {
                "id": self.store.next_id("kernel"), "ref": f"{owner}/{slug}", "versions": []}
            record["title"] = request.get("newTitle") or record.get("title") or slug
            record["isPrivate"] = request.get("isPrivate", True)
            number = len(record["versions"]) + 1
            version.update(number=number, created=time.time(), status="QUEUED")
            record["versions"].append(version)
            folder = self.folder(record["ref"], number)
            folder.mkdir(parents=True, exist_ok=True)
            self.code_path(record["ref"], version).write_text(request.get("text", ""),
                                                               encoding="utf-8")
            self._write(record, owner, slug)
        self.runner.submit(lambda: self._run(owner, slug, number, user))
        return {"ref": f"/code/{owner}/{slug}", "url": f"{base_url}/code/{owner}/{slug}",
                "versionNumber": number, "kernelId": record["id"], **invalid}

    def code_path(self, ref: str, version: dict) -> Path:
        """The version's code: kernel.py, or kernel.ipynb for a notebook kernel."""
        name = NOTEBOOK_FILE if version.get("kernelType") == "notebook" else "kernel.py"
        return self.folder(ref, version["number"]) / name

    def _set(self, owner: str, slug: str, number: int, **fields: object) -> None:
        """Record a version's new state; on a full disk it is kept in memory (and served from
        there) until a later write of the kernel's record succeeds."""
        with self.store.lock:
            record = self._with_unsaved(owner, slug,
                                        self.store.read("kernels", owner, slug, "kernel.json"))
            record["versions"][number - 1].update(fields)
            try:
                self._write(record, owner, slug)
            except OSError as exc:
                key = (owner, slug, number)
                self._unsaved[key] = {**self._unsaved.get(key, {}), **fields}
                print(f"kaggle service: {owner}/{slug} version {number} is {fields.get('status')}"
                      f" but its record could not be written ({exc.strerror}); it is kept in "
                      "memory until it can be", file=sys.stderr, flush=True)

    def _run(self, owner: str, slug: str, number: int, user: str) -> None:
        try:
            self._run_version(owner, slug, number, user)
        except RunStopped:
            raise
        except Exception as exc:     # whatever broke, the version says so and the queue goes on
            print(f"kaggle service: run of {owner}/{slug} version {number} failed: {exc!r}",
                  file=sys.stderr)
            self._set(owner, slug, number, status="ERROR",
                      failureMessage=f"the service could not run it: {exc}")

    def _run_version(self, owner: str, slug: str, number: int, user: str) -> None:
        version = self.record(owner, slug, user)["versions"][number - 1]
        folder = self.folder(f"{owner}/{slug}", number)
        mounts, relative = self.sources.mounts(version, user)
        self._set(owner, slug, number, status="RUNNING", mounts=relative)
        failure = self.runner.run(self.code_path(f"{owner}/{slug}", version), folder, mounts,
                                  version.get("sessionTimeoutSeconds"))
        if failure:
            self._set(owner, slug, number, status="ERROR", failureMessage=failure)
        else:
            self._set(owner, slug, number, status=COMPLETE)

    def resume_unfinished(self) -> None:
        """Queue again the runs a previous service process left QUEUED or RUNNING."""
        for path in sorted(self.store.path("kernels").glob("*/*/kernel.json")):
            owner, slug = path.parent.parent.name, path.parent.name
            for version in self.store.read("kernels", owner, slug, "kernel.json")["versions"]:
                if version["status"] in ("QUEUED", "RUNNING"):
                    self.runner.submit(lambda n=version["number"], o=owner, s=slug:
                                       self._run(o, s, n, o))

    def status(self, user: str, request: dict, base_url: str) -> dict:
        record = self.record(request.get("userName", ""), request.get("kernelSlug", ""), user)
        version = self.version(record, version_label(request))
        answer = {"status": version["status"]}
        if version.get("failureMessage"):
            answer["failureMessage"] = version["failureMessage"]
        return answer

    def output(self, user: str, request: dict, base_url: str) -> dict:
        owner, slug = request.get("userName", ""), request.get("kernelSlug", "")
        version = self.version(self.record(owner, slug, user), version_label(request))
        run = self.folder(f"{owner}/{slug}", version["number"]) / "run"
        working = run / "working"
        files = {p.relative_to(working).as_posix(): p for p in sorted(working.rglob("*"))
                 if regular_file_in(working, p)} if working.is_dir() else {}
        if executed := self._executed(run):   # the executed notebook, named after the kernel
            files[f"{slug}.ipynb"] = executed
        return {"files": [{"fileName": name,
                           "url": base_url + self.sign(
                               f"/files/kernels/{owner}/{slug}/{version['number']}/"
                               f"{urllib.parse.quote(name)}")}
                          for name in sorted(files)],
                "log": log_as_json(run / "kernel.log")}

    @staticmethod
    def _executed(run: Path) -> Path | None:
        """A notebook run's executed notebook (run-local keeps it beside working/)."""
        folder = run / EXECUTED_FOLDER
        path = folder / NOTEBOOK_FILE
        return path if regular_file_in(folder, path) else None

    def output_file(self, owner: str, slug: str, number: str, name: str) -> Path:
        run = self.store.path("kernels", owner, slug, number, "run")
        if name == f"{slug}.ipynb" and (executed := self._executed(run)):
            return executed
        working = run / "working"
        path = working / name
        if not regular_file_in(working, path):
            raise ApiError(404, f"output file {name[:200]} not found")
        return path

    def get(self, user: str, request: dict, base_url: str) -> dict:
        owner, slug = request.get("userName", ""), request.get("kernelSlug", "")
        record = self.record(owner, slug, user)
        version = self.version(record, version_label(request))
        text = self.code_path(record["ref"], version).read_text("utf-8")
        return {"metadata": {"id": record["id"], "ref": record["ref"], "title": record["title"],
                             "author": owner, "slug": slug, "isPrivate": record["isPrivate"],
                             "lastRunTime": timestamp(version["created"]),
                             "currentVersionNumber": len(record["versions"]),
                             **{key: version[key] for key in _SETTINGS if key in version}},
                "blob": {"source": text, "language": version.get("language"),
                         "kernelType": version.get("kernelType"), "slug": slug}}
