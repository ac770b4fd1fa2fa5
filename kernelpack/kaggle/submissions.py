"""Code-competition calls of `KaggleSession`: submit a kernel version's output and wait for the
rerun on the hidden test set and its score."""

from __future__ import annotations

from dataclasses import dataclass

from inference_core.config import KAGGLE_RUN_SECONDS, SUBMISSION_FILE

from ..errors import KaggleError


@dataclass
class Submission:
    ref: int
    status: str
    public_score: str | None = None
    private_score: str | None = None
    error: str | None = None
    kernel_version: int | None = None


class SubmissionCalls:
    """Mixed into `KaggleSession`, whose `call`, `wait`, `api` and `kernel_version` it uses."""

    def submit(self, competition: str, kernel: str, *, version: int | None = None,
               file_name: str = SUBMISSION_FILE, message: str | None = None,
               wait: bool = False, timeout: float = KAGGLE_RUN_SECONDS) -> Submission:
        """Submit a kernel version's output to a code competition; with `wait`, wait for the
        rerun on the hidden test set and its score."""
        version = self.kernel_version(kernel) if version is None else version
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
