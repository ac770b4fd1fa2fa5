"""Executes a notebook kernel in the sandbox, as Kaggle runs a notebook: one Jupyter kernel, the
cells in order, the executed notebook kept.

Run by `kernelpack run-local` (and so by the local Kaggle service) as
`python -I -c RUNNER NOTEBOOK EXECUTED KERNEL_BOOT` in the sandbox's working folder; it cannot
import kernelpack (a container holds only Python and the run's folders). The Jupyter kernel is
`python -I KERNEL_BOOT -f CONNECTION_FILE`: the boot code a script run gets (the import hook that
hides what the Kaggle image lacks, the network cut), then ipykernel. Kernel and runner talk over
Unix sockets (ZMQ ipc), not TCP: a run's network namespace may have no loopback at all.

Cell outputs are copied to stdout as they come (the run's log, as a script's prints are). When a
cell fails, the last line printed is one line naming it: `notebook cell N failed: ...`, and the
exit code is 1.
"""

import json
import os
import re
import shutil
import sys
import tempfile

try:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, DeadKernelError
    from traitlets.config import Config
except ImportError as missing:  # run-local checks first; this is the line where it could not
    print(f"notebook not run: {missing.name} is not installed; pip install "
          "'kernelpack[notebook]'", flush=True)
    raise SystemExit(1) from None

# The private kernelspec, found first through JUPYTER_PATH (a unique name: jupyter_client may
# answer "python3" with the ipykernel installed here).
KERNEL_NAME = "kernelpack-sandbox"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class LoggedClient(NotebookClient):
    """Copies each stream and error output to stdout when it arrives; knows the running cell;
    saves the notebook after each cell (a run killed at its time limit keeps what ran)."""

    running = None
    executed = None

    async def async_execute_cell(self, cell, cell_index, *args, **kwargs):
        self.running = cell_index
        done = await super().async_execute_cell(cell, cell_index, *args, **kwargs)
        nbformat.write(self.nb, self.executed)
        return done

    def output(self, outs, msg, display_id, cell_index):
        content = msg.get("content", {})
        if msg.get("msg_type") == "stream":
            print(content.get("text", ""), end="", flush=True)
        elif msg.get("msg_type") == "error":
            print(_ANSI.sub("", "\n".join(content.get("traceback", []))), flush=True)
        return super().output(outs, msg, display_id, cell_index)


def failure_line(notebook, index):
    """One line naming the failed cell (1-based, as counted in the file) and the error's last
    line; for SystemExit (how a kernel reports its own errors) the last line it wrote to stderr."""
    if index is not None:
        cell = notebook.cells[index]
        last_printed = ""
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                lines = [line for line in output.get("text", "").splitlines() if line.strip()]
                last_printed = lines[-1] if lines else last_printed
            elif output.get("output_type") == "error":
                error = f"{output.get('ename', 'Error')}: {output.get('evalue', '')}".strip()
                if output.get("ename") == "SystemExit" and last_printed:
                    error = last_printed.strip()
                return f"notebook cell {index + 1} failed: {error}"
    return f"notebook cell {'?' if index is None else index + 1} failed"


def jupyter_config(folder, boot):
    """A private kernelspec running the sandbox's boot code, and ipc sockets in `folder`."""
    spec_dir = os.path.join(folder, "kernels", KERNEL_NAME)
    os.makedirs(spec_dir)
    with open(os.path.join(spec_dir, "kernel.json"), "w", encoding="utf-8") as handle:
        json.dump({"argv": [sys.executable, "-I", boot, "-f", "{connection_file}"],
                   "display_name": "Python 3", "language": "python"}, handle)
    os.environ["JUPYTER_PATH"] = folder     # read here only: the kernel gets the run's env
    return Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(folder, "k"),
                                     "connection_file": os.path.join(folder, "connection.json")}})


def socket_folder():
    """A private folder for the sockets: in the run's TMPDIR (wiped with the sandbox, even after
    a kill) unless its path is too long for a Unix socket (108 bytes), then in /tmp."""
    if len(os.path.join(tempfile.gettempdir(), "kp-nb-12345678", "k-65535")) < 100:
        return tempfile.mkdtemp(prefix="kp-nb-")
    try:
        return tempfile.mkdtemp(prefix="kp-nb-", dir="/tmp")
    except OSError:
        return tempfile.mkdtemp(prefix="kp-nb-")


def main(source, executed, boot):
    notebook = nbformat.read(source, as_version=4)
    folder = socket_folder()
    kernel_env = dict(os.environ)       # what a script run gets
    failure = None
    try:
        client = LoggedClient(notebook, config=jupyter_config(folder, boot),
                              kernel_name=KERNEL_NAME, timeout=None, startup_timeout=120,
                              resources={"metadata": {"path": os.getcwd()}})
        client.executed = executed
        try:
            client.execute(env=kernel_env)
        except CellExecutionError:
            failure = failure_line(notebook, client.running)
        except DeadKernelError as exc:
            failure = (f"{failure_line(notebook, client.running)}: the Jupyter kernel died "
                       f"({' '.join(str(exc).split())})")
        except Exception as exc:
            if client.running is not None:
                raise
            failure = (f"notebook not run: its Jupyter kernel did not start "
                       f"({type(exc).__name__}: {' '.join(str(exc).split())})")
    finally:
        nbformat.write(notebook, executed)
        shutil.rmtree(folder, ignore_errors=True)
    if failure:
        print(failure, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    code = main(*sys.argv[1:4])
    sys.stdout.flush()
    # Not sys.exit: nbclient's exit hooks, run after a failed kernel start, would print a
    # traceback after the failure line (the kernel, if it started, is shut down already).
    os._exit(code)
