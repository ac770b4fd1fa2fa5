"""Who is asking: users with their API keys, access tokens, and signed download links.

As on Kaggle, every call needs credentials: HTTP Basic `USERNAME:KEY` of a known user with its
own key, or `Bearer TOKEN` of a known access token. Keys are kept salted and hashed in
`ROOT/users.json`, tokens in `ROOT/tokens.json`. Kernel output files are fetched by the client with
a plain GET and no credentials (on Kaggle they are signed storage links), so the links handed out
carry an expiry and an HMAC signature made with `ROOT/signing.key`; a GET without a valid
signature needs credentials like any other call.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time

from .store import Store
from .wire import ApiError

# How long a signed output link works, as Kaggle's storage links do for a while.
LINK_SECONDS = 3600
_REFUSED = ApiError(401, "Unauthenticated: the username and key (or access token) were not "
                         "accepted; check kaggle.json or KAGGLE_USERNAME and KAGGLE_KEY")


def _digest(salt: str, key: str) -> str:
    return hashlib.sha256(f"{salt}:{key}".encode()).hexdigest()


class Accounts:
    def __init__(self, store: Store) -> None:
        self.store = store

    def add_user(self, name: str, key: str) -> None:
        """Accept `name` with `key` (as kaggle.json holds them); kept on disk, hashed."""
        if not name or not key or ":" in name:
            raise ValueError(f"user {name!r}: needs a name without ':' and a non-empty key")
        salt = secrets.token_hex(8)
        with self.store.lock:
            users = self.store.read("users.json") or {}
            users[name] = {"salt": salt, "sha256": _digest(salt, key)}
            self.store.write(users, "users.json")

    def add_token(self, token: str, user: str) -> None:
        with self.store.lock:
            self.store.write({**self.tokens(), token: user}, "tokens.json")

    def tokens(self) -> dict[str, str]:
        return self.store.read("tokens.json") or {}

    def has_anyone(self) -> bool:
        return bool(self.store.read("users.json") or self.tokens())

    def user(self, authorization: str | None) -> str:
        """The user the Authorization header proves to be; a 401 otherwise."""
        scheme, _, value = (authorization or "").strip().partition(" ")
        if scheme == "Bearer":
            owner = self.tokens().get(value.strip())
            if owner:
                return owner
        elif scheme == "Basic":
            try:
                name, _, key = base64.b64decode(value.strip(), validate=True).decode() \
                    .partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise _REFUSED from None
            known = (self.store.read("users.json") or {}).get(name)
            if known and hmac.compare_digest(known["sha256"], _digest(known["salt"], key)):
                return name
        raise _REFUSED

    def _signing_key(self) -> bytes:
        with self.store.lock:
            key = self.store.read("signing.json")
            if key is None:
                key = secrets.token_hex(32)
                self.store.write(key, "signing.json")
        return key.encode()

    def sign(self, path: str) -> str:
        """`path` with a query that lets anyone holding the link GET it for LINK_SECONDS."""
        expires = int(time.time()) + LINK_SECONDS
        return f"{path}?expires={expires}&signature={self._signature(path, expires)}"

    def _signature(self, path: str, expires: int) -> str:
        return hmac.new(self._signing_key(), f"{path}\n{expires}".encode(),
                        hashlib.sha256).hexdigest()

    def signed(self, path: str, query: dict[str, list[str]]) -> bool:
        expires, signature = query.get("expires", [""])[0], query.get("signature", [""])[0]
        if not expires.isdigit() or len(expires) > 12 or int(expires) < time.time():
            return False
        return hmac.compare_digest(signature, self._signature(path, int(expires)))
