"""Kernel calls of `KaggleSession`: push a folder written by `kernelpack build` (refusing a
public kernel that embeds a key or a machine shape the client does not know, failing when Kaggle
drops a data source), follow its run, fetch its log and output. The accelerator travels as
kernel-metadata.json's machine_shape, which the client sends with the push."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference_core.config import KAGGLE_RUN_SECONDS

from ..config import ACCELERATORS
from ..errors import KaggleError
from ..kernel.build import embeds_key
from ..metadata import KERNEL_METADATA

_FINISHED = {"COMPLETE", "ERROR", "CANCEL_ACKNOWLEDGED"}


@dataclass
class KernelPush:
    ref: str
    version: int
    url: str
    status: str | None = None     # set when waited for


def _is_true(value: Any) -> bool:
    """kernel-metadata.json booleans, read as the client reads them (strings allowed)."""
    return value.lower() == "true" if isinstance(value, str) else bool(value)


class KernelCalls:
    """Mixed into `KaggleSession`, whose `call`, `wait`, `api` and `where` it uses."""

    def push_kernel(self, folder: str | Path, *, wait: bool = False,
                    timeout: float = KAGGLE_RUN_SECONDS) -> KernelPush:
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
        shape = metadata.get("machine_shape")
        names = [accelerator.machine_shape for accelerator in ACCELERATORS]
        if shape and shape not in names:  # the client sends any string; Kaggle fails it later
            raise KaggleError(f"{metadata_path}: machine_shape {shape!r} is none the kaggle "
                              f"client knows ({', '.join(names)}); set kernel.accelerator in "
                              "the config and build again")
        code = folder / metadata.get("code_file", "kernel.py")
        # Read from the kernel's content (its decompressed payload), not from a marker line.
        if not _is_true(metadata.get("is_private", True)) and code.is_file() and embeds_key(code):
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
            push.status = self.wait_kernel(ref, timeout, version=push.version)
        return push

    def kernel_status(self, ref: str) -> tuple[str, str | None]:
        """(status name, failure message) of the kernel's newest version."""
        answer = self.call(f"{ref}: kernel status", self.api.kernels_status, ref, retry=True)
        return answer.status.name, answer.failure_message or None

    def wait_kernel(self, ref: str, timeout: float, version: int | None = None) -> str:
        """Wait for the newest version's run to end; with `version`, fail rather than report
        another version's run (Kaggle tells the status of the newest version only, so a version
        pushed meanwhile, by another push, hides this one's)."""
        def finished() -> tuple[str, str | None] | None:
            status = self.kernel_status(ref)
            return status if status[0] in _FINISHED else None

        status, failure = self.wait(f"{ref}: run", finished, timeout,
                                    f"check later with `kernelpack kernel status {ref}`")
        newest = None if version is None else self.kernel_version(ref)
        if newest is not None and newest != version:
            raise KaggleError(f"{ref}: version {newest} was pushed while version {version} ran, "
                              f"and Kaggle reports the newest version's run only (it ended "
                              f"{status}); see version {version} on the kernel's page, or "
                              "push again with no other push in between")
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
