"""Scoring a submission against held-back labels: accuracy, split into public and private rows.

The solution CSV holds an id column, a label column and optionally `Usage` (Public/Private), as
Kaggle's solution files do; without `Usage`, both scores use every row.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .wire import ApiError


def _rows(path: Path, what: str) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            return list(csv.DictReader(stream))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ApiError(400, f"{what} {path.name} cannot be read as CSV: {exc}") from None


def score(submission: Path, solution: Path, id_column: str, label_column: str
          ) -> tuple[float, float]:
    """(public, private) accuracy; ApiError(400) names what is wrong with the submission."""
    truth = _rows(solution, "solution")
    predicted = {}
    for row in _rows(submission, "submission"):
        if id_column not in row or label_column not in row:
            raise ApiError(400, f"submission {submission.name} needs columns "
                                f"{id_column!r} and {label_column!r}")
        predicted[row[id_column]] = row[label_column].strip()
    missing = [row[id_column] for row in truth if row[id_column] not in predicted]
    if missing:
        raise ApiError(400, f"submission {submission.name} lacks {len(missing)} of {len(truth)} "
                            f"test ids (first: {missing[0]})")
    scores = []
    for usage in ("Public", "Private"):
        rows = [row for row in truth if row.get("Usage", usage) == usage] or truth
        hits = sum(predicted[row[id_column]] == row[label_column].strip() for row in rows)
        scores.append(hits / len(rows))
    return scores[0], scores[1]
