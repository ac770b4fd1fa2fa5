"""The Kaggle commands of `kernelpack`: dataset push, kernel push/status/logs/output, submit, and
serve-kaggle (the local service). They parse, call `kernelpack.kaggle` (the client session, the
local service; both imported when a command runs, so the parser stays light), print."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from inference_core.config import SUBMISSION_FILE

from ..errors import KaggleServiceError
from ..metadata import DATASET_METADATA, KERNEL_METADATA, URL_ENV
from ..progress import shows_progress
from .folders import OneFolder, add_folder_argument, needs_folder
from .numbers import int_at_least


def _session(args: argparse.Namespace):  # -> kernelpack.kaggle.session.KaggleSession
    from ..kaggle.session import KaggleSession

    return KaggleSession(args.kaggle_url)


def _dataset_push(args: argparse.Namespace) -> int:
    push = _session(args).push_dataset(args.folder, public=args.public, message=args.message,
                                       wait=args.wait, dataset_id=args.id, title=args.title,
                                       progress=shows_progress(args.quiet))
    if push.skipped:
        print(f"{push.ref}: unchanged since version {push.version}; nothing uploaded")
    elif push.verified:
        print(f"{push.ref}: version {push.version} is ready, all {len(push.uploaded)} files "
              "listed with their sizes")
    else:
        print(f"{push.ref}: version {push.version} created ({len(push.uploaded)} files); "
              "pass --wait to wait until it is ready and verify its files")
    return 0


def _kernel_push(args: argparse.Namespace) -> int:
    push = _session(args).push_kernel(args.folder, wait=args.wait)
    done = "ran to completion" if push.status else "pushed; its run is queued"
    print(f"{push.ref}: version {push.version} {done} ({push.url})")
    return 0


def _kernel_status(args: argparse.Namespace) -> int:
    status, failure = _session(args).kernel_status(args.kernel)
    print(f"{args.kernel}: {status}" + (f" ({failure})" if failure else ""))
    return 0 if status != "ERROR" else 1


def _kernel_logs(args: argparse.Namespace) -> int:
    sys.stdout.write(_session(args).kernel_logs(args.kernel))
    return 0


def _kernel_output(args: argparse.Namespace) -> int:
    for path in _session(args).kernel_output(args.kernel, args.path):
        print(path)
    return 0


def _submit(args: argparse.Namespace) -> int:
    submission = _session(args).submit(args.competition, args.kernel, version=args.version,
                                       file_name=args.file, message=args.message, wait=args.wait)
    if submission.status == "COMPLETE":
        print(f"{args.competition}: submission {submission.ref} ({args.kernel} version "
              f"{submission.kernel_version}) scored {submission.public_score} public, "
              f"{submission.private_score} private")
    else:
        print(f"{args.competition}: submission {submission.ref} ({args.kernel} version "
              f"{submission.kernel_version}) is {submission.status.lower()}; pass --wait to "
              "wait for its score")
    return 0


def _competition_spec(spec: str) -> tuple[str, str, str, str | None]:
    parts = spec.split(":")
    if len(parts) not in (3, 4) or not all(parts):
        raise KaggleServiceError(f"--competition {spec!r}: expected "
                                 "SLUG:DATA_DIR:SOLUTION_CSV[:HIDDEN_DIR], e.g. "
                                 "digits:input/digits:heldout/labels.csv")
    return parts[0], parts[1], parts[2], parts[3] if len(parts) == 4 else None


def _pairs(specs: list[str], option: str, separator: str, form: str) -> list[tuple[str, str]]:
    pairs = [spec.partition(separator)[::2] for spec in specs]
    for spec, (left, right) in zip(specs, pairs, strict=True):
        if not left or not right:
            raise KaggleServiceError(f"{option} {spec!r}: expected {form}")
    return pairs


def _stop_on_sigterm() -> None:
    """SIGTERM stops the service as Ctrl-C does, so the kernel runs it started are killed."""
    import signal

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _serve(args: argparse.Namespace) -> int:
    from ..kaggle.service import KaggleService, add_competition, parse_fault
    from ..kaggle.service.run_queue import isolation

    if not math.isfinite(args.processing_seconds) or args.processing_seconds < 0:
        raise KaggleServiceError(f"--processing-seconds {args.processing_seconds}: must be a "
                                 "finite number of seconds, 0 or more")
    root = Path(args.root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KaggleServiceError(f"--root {root}: {exc.strerror}; pass a folder (new or one "
                                 "this command made before)") from None
    faults = [parse_fault(spec) for spec in args.fault]
    tokens = _pairs(args.token, "--token", "=", "TOKEN=USERNAME")
    users = dict(_pairs(args.user, "--user", ":", "USERNAME:KEY (as in kaggle.json)"))
    competitions = [_competition_spec(spec) for spec in args.competition]
    for slug, data, solution, hidden in competitions:
        add_competition(args.root, slug, data, solution, hidden)
    try:
        service = KaggleService(args.root, host=args.host, port=args.port,
                                processing_seconds=args.processing_seconds, users=users,
                                flat_input=args.flat_input, workers=args.workers)
    except (OSError, OverflowError) as exc:
        raise KaggleServiceError(f"serve-kaggle on {args.host}:{args.port}: "
                                 f"{getattr(exc, 'strerror', None) or exc}; pick another --host "
                                 "or --port (0: any free port)") from None
    for fault in faults:
        service.faults.add(fault)
    for token, user in tokens:
        service.add_token(token, user)
    _stop_on_sigterm()
    print(f"local Kaggle service at {service.url} (state in {args.root})\n"
          f"  kernelpack:  --kaggle-url {service.url}   or   export {URL_ENV}={service.url}\n"
          f"  kaggle:      KAGGLE_API_ENVIRONMENT=LOCALHOST HTTP_PROXY={service.url} kaggle ...",
          flush=True)
    print(f"kernel runs: {isolation()[1]}; {args.workers} at once", file=sys.stderr,
          flush=True)
    print("kernel sources: " + ("input/SLUG, as Kaggle mounted them before (--flat-input)"
                                if args.flat_input else
                                "input/competitions/SLUG, input/datasets/OWNER/SLUG, input/"
                                "models/OWNER/..., input/notebooks/OWNER/SLUG, as Kaggle mounts "
                                "them today"), file=sys.stderr, flush=True)
    if not service.accounts.has_anyone():
        print("no users yet: every call is refused until you restart with --user NAME:KEY "
              "(the username and key of your kaggle.json) or --token TOKEN=USERNAME",
              file=sys.stderr, flush=True)
    try:
        service.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    return 0


def kaggle_target() -> argparse.ArgumentParser:
    """The parent parser of every command that calls Kaggle: `--kaggle-url`."""
    target = argparse.ArgumentParser(add_help=False)
    target.add_argument("--kaggle-url", metavar="URL", default=None,
                        help=f"send every call to this service (e.g. one started with "
                             f"`kernelpack serve-kaggle`) instead of Kaggle; default: "
                             f"${URL_ENV}, else Kaggle")
    return target


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add the Kaggle commands to `kernelpack`'s subcommands."""
    target = kaggle_target()

    dataset = commands.add_parser("dataset", help="push a dataset folder")
    dataset_commands = dataset.add_subparsers(dest="dataset_command", required=True,
                                              metavar="COMMAND")
    push = dataset_commands.add_parser(
        "push", parents=[target], help="create the dataset or add a version (skipped when "
                                       "unchanged)")
    add_folder_argument(push, "folder", "folder of files (top level only), with or without "
                                        f"{DATASET_METADATA}")
    push.add_argument("--public", action="store_true", help="make a new dataset public")
    push.add_argument("-m", "--message", default=None, help="version notes")
    push.add_argument("--wait", action="store_true",
                      help="wait until the version is ready and verify every file's size")
    push.add_argument("--id", default=None, metavar="OWNER/SLUG",
                      help=f"dataset id when {DATASET_METADATA} is absent (default: "
                           "USERNAME/FOLDER-NAME)")
    push.add_argument("--title", default=None, help=f"title when {DATASET_METADATA} is absent")
    push.add_argument("--quiet", action="store_true", help="no upload progress bar")
    push.set_defaults(handler=needs_folder(push, "folder", _dataset_push))

    kernel = commands.add_parser("kernel", help="push a kernel, follow its run")
    kernel_commands = kernel.add_subparsers(dest="kernel_command", required=True,
                                            metavar="COMMAND")
    push = kernel_commands.add_parser("push", parents=[target],
                                      help="push a folder written by `kernelpack build`")
    add_folder_argument(push, "folder",
                        f"folder with kernel.py (or kernel.ipynb) and {KERNEL_METADATA}")
    push.add_argument("--wait", action="store_true", help="wait until the run ends")
    push.set_defaults(handler=needs_folder(push, "folder", _kernel_push))
    for name, handler, text in (("status", _kernel_status, "the newest version's run status"),
                                ("logs", _kernel_logs, "the newest version's log"),
                                ("output", _kernel_output, "download the newest version's "
                                                           "output files")):
        command = kernel_commands.add_parser(name, parents=[target], help=text)
        command.add_argument("kernel", metavar="OWNER/SLUG")
        command.set_defaults(handler=handler)
        if name == "output":
            command.add_argument("-p", "--path", default=".", help="download folder")

    submit = commands.add_parser("submit", parents=[target],
                                 help="submit a kernel's output to a code competition")
    submit.add_argument("competition", help="competition slug")
    submit.add_argument("--kernel", required=True, metavar="OWNER/SLUG")
    submit.add_argument("--version", type=int_at_least(1), default=None,
                        help="kernel version (default: the newest)")
    submit.add_argument("--file", default=SUBMISSION_FILE, help="the kernel's output file")
    submit.add_argument("-m", "--message", default=None, help="submission description")
    submit.add_argument("--wait", action="store_true",
                        help="wait for the rerun on the hidden test set and print the score")
    submit.set_defaults(handler=_submit)

    serve = commands.add_parser("serve-kaggle", help="run a local Kaggle service for rehearsals")
    serve.add_argument("--root", "-p", "--path", dest="root", action=OneFolder, required=True,
                       metavar="DIR", help="state folder (kept between runs)")
    serve.add_argument("--port", type=int, default=8765, help="port (0: any free one)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--workers", type=int_at_least(1), default=1, metavar="N",
                       help="kernel runs that go at once, each in its own container (Kaggle "
                            "runs several sessions of a user side by side); default 1")
    serve.add_argument("--processing-seconds", type=float, default=0.0,
                       help="how long new dataset versions and kernel runs stay processing")
    serve.add_argument("--competition", action="append", default=[],
                       metavar="SLUG:DATA_DIR:SOLUTION_CSV[:HIDDEN_DIR]",
                       help="add a code competition: the data kernels see, the held-back "
                            "labels (id, label columns), optionally a hidden test set for reruns")
    serve.add_argument("--fault", action="append", default=[], metavar="KIND:TARGET[:COUNT]",
                       help="inject a fault: KIND an HTTP status (429 adds Retry-After) or "
                            "'drop'; TARGET an RPC name (SaveKernel, ...) or 'upload'")
    serve.add_argument("--user", action="append", default=[], metavar="USERNAME:KEY",
                       help="accept this user with this API key (as in kaggle.json); kept in "
                            "the state folder, so once is enough")
    serve.add_argument("--token", action="append", default=[], metavar="TOKEN=USERNAME",
                       help="accept this access token (KAGGLE_API_TOKEN) for USERNAME")
    serve.add_argument("--flat-input", action="store_true",
                       help="mount kernel sources as Kaggle did before, input/SLUG, not as it "
                            "does today (input/competitions/SLUG, input/datasets/OWNER/SLUG, "
                            "...)")
    serve.set_defaults(handler=_serve)
