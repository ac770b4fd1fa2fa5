"""`kernelpack model push`: a folder of weights as a Kaggle Model version. It parses, checks the
handle before anything is sent, calls `KaggleSession.push_model` (imported when it runs, so the
parser stays light) and prints where a kernel finds the version."""

from __future__ import annotations

import argparse

from ..kaggle.model_handles import EXAMPLE, parse_handle
from ..metadata import MODEL_INSTANCE_METADATA, MODEL_METADATA
from ..progress import shows_progress
from .folders import add_folder_argument, needs_folder
from .kaggle import kaggle_target


def _model_push(args: argparse.Namespace) -> int:
    handle = parse_handle(args.handle)      # a malformed handle stops here, before signing in
    from ..kaggle.session import KaggleSession

    push = KaggleSession(args.kaggle_url).push_model(args.folder, handle, message=args.message,
                                                     wait=args.wait, public=args.public,
                                                     progress=shows_progress(args.quiet))
    # Where a kernel finds it: Kaggle's layout today, and the flat one it used before.
    source = (f"model_sources: {push.handle}/{push.version}; input/models/"
              f"{handle.owner}/{push.mount_point}/ (flat: input/{push.mount_point}/)")
    if push.skipped:
        print(f"{push.handle}: unchanged since version {push.version}; nothing uploaded "
              f"({source})")
    elif push.verified:
        made = f" (created the {' and the '.join(push.created)})" if push.created else ""
        print(f"{push.handle}: version {push.version} is ready{made}, all "
              f"{len(push.uploaded)} files listed with their sizes ({source})")
    else:
        print(f"{push.handle}: version {push.version} created ({len(push.uploaded)} files); "
              f"pass --wait to wait until it is ready and verify its files ({source})")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add `model push` to `kernelpack`'s subcommands."""
    model = commands.add_parser("model", help="push weights as a Kaggle Model")
    model_commands = model.add_subparsers(dest="model_command", required=True,
                                          metavar="COMMAND")
    push = model_commands.add_parser(
        "push", parents=[kaggle_target()],
        help="create the model and its instance, or add a version (skipped when unchanged)")
    add_folder_argument(push, "folder", f"folder of weight files (top level only), with or "
                                        f"without {MODEL_METADATA} and {MODEL_INSTANCE_METADATA}")
    push.add_argument("--handle", required=True, metavar="OWNER/MODEL/FRAMEWORK/VARIATION",
                      help=f"the model instance, e.g. {EXAMPLE}; a kernel then names version N "
                           "as HANDLE/N in model_sources")
    push.add_argument("--public", action="store_true",
                      help="make a new model public (encrypted weights can be)")
    push.add_argument("-m", "--message", default=None, help="version notes")
    push.add_argument("--wait", action="store_true",
                      help="wait until the version is ready and verify every file's size")
    push.add_argument("--quiet", action="store_true", help="no upload progress bar")
    push.set_defaults(handler=needs_folder(push, "folder", _model_push))
