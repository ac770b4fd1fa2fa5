"""Kaggle through the official client (`kaggle.api.KaggleApi`), made safe to script.

The client prints to stdout, reports some failures with exit code 0, authenticates (and prints) at
import time and calls `exit()` from library code. Here every call runs with its output captured
and its failures turned into typed errors with a fix in the message; nothing is reported as pushed
that is not verified to be there. The calls themselves are grouped by what they act on, in
`datasets`, `kernels`, `models` and `submissions`; this module signs in, routes and maps errors.

`KaggleSession(url)` sends every call of the client to `url` (a local service started with
`kernelpack serve-kaggle`) instead of Kaggle; without `url`, `KERNELPACK_KAGGLE_URL` is used, and
without that, Kaggle itself. Credentials are found as the client finds them: `kaggle.json` in
`KAGGLE_CONFIG_DIR` (or ~/.kaggle), `KAGGLE_USERNAME` + `KAGGLE_KEY`, or `KAGGLE_API_TOKEN`.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

from ..errors import KaggleAuthError, KaggleError, KaggleNotFoundError
from ..metadata import URL_ENV
from . import _client_internals as internals
from .datasets import DatasetCalls
from .kernels import KernelCalls
from .models import ModelCalls
from .submissions import SubmissionCalls

# Attempts for calls safe to repeat: the client's default of 10 spends over two minutes backing
# off before it reports a service that is down.
READ_RETRIES = 4


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


class KaggleSession(DatasetCalls, KernelCalls, ModelCalls, SubmissionCalls):
    """One authenticated client; every method raises KaggleError (or a subclass) on failure."""

    def __init__(self, url: str | None = None, *, poll_seconds: float = 5.0) -> None:
        self.url = (url or os.environ.get(URL_ENV) or "").rstrip("/") or None
        self.poll_seconds = poll_seconds
        self.api = internals.routed_api_class()(self.url)
        self.call("sign-in", self.api.authenticate)
        self.username: str = internals.signed_in_username(self.api)

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
