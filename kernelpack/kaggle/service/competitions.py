"""Code competitions: a submission re-runs the kernel version on the hidden test set and scores
its output against held-back labels.

Layout: `ROOT/competitions/SLUG/` holds `competition.json` (id and label columns), `data/` (what
kernels see), optionally `hidden/` (the rerun's test data, in the same layout as `data/`) and
`solution.csv`; `ROOT/submissions/REF.json` and `ROOT/submissions/REF/` (the rerun) the
submissions. The rerun sees the same dataset, kernel and model folders as the version's own run.
"""

from __future__ import annotations

import csv
import shutil
import time
from pathlib import Path

from inference_core.config import SUBMISSION_FILE

from ...errors import KaggleServiceError
from .kernels import Kernels, regular_file_in
from .run_queue import Runner, RunStopped
from .scoring import score
from .sources import COMPLETE, Sources, competition_dir
from .store import Store
from .wire import ApiError, check_name, timestamp

DAILY_SUBMISSIONS = 5


def add_competition(root: str | Path, slug: str, data_dir: str | Path, solution: str | Path,
                    hidden_dir: str | Path | None = None) -> Path:
    """Copy a competition into a service root; the solution's first two columns are id, label."""
    try:
        check_name(slug, "competition slug")
    except ApiError as exc:
        raise KaggleServiceError(f"competition {exc.message}") from None
    data_dir, solution = Path(data_dir), Path(solution)
    for path, what in ((data_dir, "data folder"), (hidden_dir, "hidden test folder")):
        if path is not None and not Path(path).is_dir():
            raise KaggleServiceError(f"{path}: {what} not found; pass an existing folder")
    if not solution.is_file():
        raise KaggleServiceError(f"{solution}: solution CSV not found; pass the held-back labels")
    try:
        with open(solution, newline="", encoding="utf-8") as stream:
            header = next(csv.reader(stream), [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise KaggleServiceError(f"{solution}: cannot be read as a UTF-8 CSV ({exc}); pass the "
                                 "held-back labels as CSV") from None
    if len(header) < 2:
        raise KaggleServiceError(f"{solution}: needs an id column and a label column, "
                                 f"got {header}")
    state = Path(root).resolve()
    for path in (data_dir, hidden_dir, solution):
        if path is not None and (Path(path).resolve().is_relative_to(state)
                                 or state.is_relative_to(Path(path).resolve())):
            raise KaggleServiceError(f"{path}: inside or around the service's --root {root}; "
                                     "keep the competition's files outside the state folder")
    folder = Path(root) / "competitions" / slug
    try:
        if folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(data_dir, folder / "data")
        if hidden_dir is not None:
            shutil.copytree(hidden_dir, folder / "hidden")
        shutil.copyfile(solution, folder / "solution.csv")
    except (OSError, shutil.Error) as exc:
        raise KaggleServiceError(f"competition {slug}: copying it into {folder} failed: "
                                 f"{exc}") from None
    store = Store(root)
    store.write({"idColumn": header[0], "labelColumn": header[1]},
                "competitions", slug, "competition.json")
    return folder


class Competitions:
    def __init__(self, store: Store, kernels: Kernels, sources: Sources, runner: Runner) -> None:
        self.store = store
        self.kernels = kernels
        self.sources = sources
        self.runner = runner

    def _competition(self, slug: str) -> Path:
        folder = competition_dir(self.store, slug)
        if folder is None:
            raise ApiError(404, f"competition {slug!r} not found")
        return folder

    def create_code_submission(self, user: str, request: dict, base_url: str) -> dict:
        slug = request.get("competitionName", "")
        self._competition(slug)
        owner, kernel_slug = request.get("kernelOwner", ""), request.get("kernelSlug", "")
        record = self.kernels.record(owner, kernel_slug, user)
        if owner != user:
            raise ApiError(403, f"{owner}/{kernel_slug} is not yours; copy it to your account "
                                "and submit your own version")
        version = self.kernels.version(record, request.get("kernelVersion"))
        file_name = check_name(request.get("fileName") or SUBMISSION_FILE, "file name")
        ref_text = f"{owner}/{kernel_slug} version {version['number']}"
        if self.limits(user, request, base_url)["numAllowedNow"] == 0:
            raise ApiError(429, f"daily limit of {DAILY_SUBMISSIONS} submissions to {slug} "
                                "reached; try again tomorrow")
        if version["status"] != COMPLETE:
            raise ApiError(400, f"{ref_text} has status {version['status']}; a code submission "
                                "needs a version that ran successfully")
        if version.get("enableInternet", True):
            raise ApiError(400, f"{ref_text} has internet enabled; code competitions need it off")
        if slug not in version.get("competitionDataSources", []):
            raise ApiError(400, f"{ref_text} does not have competition {slug} as a data source")
        output = self.kernels.folder(record["ref"], version["number"]) / "run" / "working"
        if not regular_file_in(output, output / file_name):
            raise ApiError(400, f"{ref_text} did not write {file_name}")
        ref = self.store.next_id("submission")
        self.store.write({"ref": ref, "competition": slug, "user": user, "date": time.time(),
                          "kernel": record["ref"], "kernelVersion": version["number"],
                          "fileName": file_name, "description": request.get(
                              "submissionDescription", ""), "status": "PENDING"},
                         "submissions", f"{ref}.json")
        self.runner.submit(lambda: self._rerun(ref, version))
        return {"message": "Successfully submitted", "ref": ref}

    def resume_unfinished(self) -> None:
        """Queue again the reruns a previous service process left PENDING."""
        for path in sorted(self.store.path("submissions").glob("*.json"),
                           key=lambda p: int(p.stem)):
            submission = self.store.read("submissions", path.name)
            if submission["status"] == "PENDING":
                owner, slug = submission["kernel"].split("/")
                version = self.kernels.record(owner, slug, owner)["versions"][
                    submission["kernelVersion"] - 1]
                self.runner.submit(lambda r=submission["ref"], v=version: self._rerun(r, v))

    def _rerun(self, ref: int, version: dict) -> None:
        submission = self.store.read("submissions", f"{ref}.json")
        folder = self.store.path("submissions", str(ref))
        kernel = self.kernels.code_path(submission["kernel"], version)   # script or notebook
        try:
            failure = self.runner.run(kernel, folder, self.sources.rerun_mounts(version),
                                      version.get("sessionTimeoutSeconds"))
        except RunStopped:
            raise
        except Exception as exc:     # whatever broke, the submission says so
            failure = f"the service could not run it: {exc}"
        update: dict = {"status": "ERROR"}
        output = folder / "run" / "working" / submission["fileName"]
        if failure:
            update["errorDescription"] = f"rerun on the hidden test set failed: {failure}"
        elif not regular_file_in(output.parent, output):
            update["errorDescription"] = f"the rerun wrote no {submission['fileName']}"
        else:
            columns = self.store.read("competitions", submission["competition"],
                                      "competition.json")
            try:
                public, private = score(output, self._competition(submission["competition"])
                                        / "solution.csv", columns["idColumn"],
                                        columns["labelColumn"])
                update = {"status": "COMPLETE", "publicScore": f"{public:.5f}",
                          "privateScore": f"{private:.5f}", "totalBytes": output.stat().st_size}
            except ApiError as exc:
                update["errorDescription"] = exc.message
        with self.store.lock:
            submission.update(update)
            self.store.write(submission, "submissions", f"{ref}.json")

    def _answer(self, submission: dict, base_url: str) -> dict:
        keys = ("ref", "fileName", "description", "status", "publicScore", "privateScore",
                "errorDescription", "totalBytes")
        return {**{key: submission[key] for key in keys if key in submission},
                "date": timestamp(submission["date"]), "submittedBy": submission["user"],
                "teamName": submission["user"],
                "url": f"{base_url}/competitions/{submission['competition']}/submissions"}

    def get_submission(self, user: str, request: dict, base_url: str) -> dict:
        ref = int(request.get("ref", 0))
        submission = self.store.read("submissions", f"{ref}.json")
        if submission is None or submission["user"] != user:
            raise ApiError(404, f"submission {ref} not found")
        return self._answer(submission, base_url)

    def _submissions(self, user: str, slug: str) -> list[dict]:
        folder = self.store.path("submissions")
        found = [self.store.read("submissions", p.name) for p in folder.glob("*.json")] \
            if folder.is_dir() else []
        return sorted((s for s in found if s["competition"] == slug and s["user"] == user),
                      key=lambda s: -s["ref"])

    def list_submissions(self, user: str, request: dict, base_url: str) -> dict:
        slug = request.get("competitionName", "")
        self._competition(slug)
        return {"submissions": [self._answer(s, base_url) for s in self._submissions(user, slug)]}

    def limits(self, user: str, request: dict, base_url: str) -> dict:
        slug = request.get("competitionName", "")
        self._competition(slug)
        today = [s for s in self._submissions(user, slug) if s["date"] > time.time() - 86400]
        return {"numToday": len(today), "numTotal": len(self._submissions(user, slug)),
                "numAllowedNow": max(0, DAILY_SUBMISSIONS - len(today))}
