"""The searches' progress bar: steps done and the best score so far, on stderr.

Whether a bar may show is the CLI's rule (`kernelpack.progress.shows_progress`: a terminal, no
--quiet); a search also shows it only once it has run `SHOW_AFTER_S` seconds, so a search of a
few hundred rows never draws one. tqdm is imported when a bar is built.
"""

from __future__ import annotations

import sys
from typing import Any

SHOW_AFTER_S = 3.0


def search_bar(total: int, desc: str, enabled: bool) -> Any:  # -> tqdm.tqdm
    """A bar of `total` steps; a silent stand-in with the same methods when not `enabled`."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, disable=not enabled,
                delay=SHOW_AFTER_S, dynamic_ncols=True)


def show_best(bar: Any, metric: str, score: float) -> None:
    bar.set_postfix_str(f"best {metric} {score:.4f}", refresh=False)
