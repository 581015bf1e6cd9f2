"""HTTP Basic authentication with the exchange's passwords (the broker's credentials):
an account sees only its own data, the operator everything. Passwords are compared in
constant time and never logged or echoed."""

from __future__ import annotations

import base64
import hmac
import logging
import time
from collections.abc import Callable, Mapping

from gateway.protocol import GATEWAY, OPERATOR

__all__ = ["Credentials", "OPERATOR", "FAILURES_ALLOWED", "FAILURE_WINDOW_S"]

log = logging.getLogger("carbonx.web")

FAILURES_ALLOWED = 20  # failed logins from one address in a window; then it waits
FAILURE_WINDOW_S = 60.0
_ADDRESSES_KEPT = 10_000  # addresses with failures remembered at most


class Credentials:
    """Who may log in to the web portal: accounts and the operator, by password.

    Guessing is bounded: past ``failures`` failed logins (a wrong or unreadable
    ``Authorization`` header; none at all is a browser asking, not a failure) from one
    address within ``window`` seconds, that address waits until the window ends
    (``wait``), and the portal answers it 429 without looking at its password."""

    def __init__(self, passwords: Mapping[str, str], *, failures: int = FAILURES_ALLOWED,
                 window: float = FAILURE_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        # Kept by reference: an account opened live, given a login in the broker's
        # credentials, may log in to the pages at once.
        self._passwords = passwords
        self._failures, self._window, self._clock = failures, window, clock
        self._failed: dict[str, list[float]] = {}  # address -> [window start, failures]

    def wait(self, address: str) -> float:
        """Seconds before *address* may try to log in again (0: it may now)."""
        entry = self._failed.get(address)
        if entry is None:
            return 0.0
        left = entry[0] + self._window - self._clock()
        if left <= 0:
            del self._failed[address]
            return 0.0
        return left if entry[1] >= self._failures else 0.0

    def user(self, authorization: str | None, address: str = "") -> str | None:
        """The user an ``Authorization: Basic ...`` header proves, or ``None`` (a failure
        of *address*'s, when a header was given)."""
        if not authorization:
            return None
        user = self._check(authorization)
        if user is None:
            self._failure(address)
        return user

    def _check(self, authorization: str) -> str | None:
        if authorization[:6].lower() != "basic ":
            return None
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except ValueError:  # not base64 (binascii.Error), not ASCII, not UTF-8: no login
            return None
        user, colon, password = decoded.partition(":")
        # The gateway's own login is a machine's: it never opens the pages.
        known = None if user == GATEWAY else self._passwords.get(user)
        if not colon or known is None:
            # The same time for unknown users; as bytes, as compare_digest takes no text
            # beyond ASCII.
            hmac.compare_digest(password.encode(), password.encode())
            return None
        return user if hmac.compare_digest(password.encode(), known.encode()) else None

    def _failure(self, address: str) -> None:
        now = self._clock()
        entry = self._failed.get(address)
        if entry is None or entry[0] + self._window <= now:
            if len(self._failed) >= _ADDRESSES_KEPT:  # bounded: the expired go, then the oldest
                for stale in [a for a, e in self._failed.items() if e[0] + self._window <= now]:
                    del self._failed[stale]
                while len(self._failed) >= _ADDRESSES_KEPT:
                    del self._failed[next(iter(self._failed))]
            entry = self._failed[address] = [now, 0]
        entry[1] += 1
        if entry[1] == self._failures:
            log.warning("web: %d failed logins from %s within %.0f s: its logins are refused "
                        "for the rest of that time", self._failures, address or "(unknown)",
                        self._window)

    @staticmethod
    def may_see(user: str, account: str) -> bool:
        """May *user* see *account*'s data? Its own, or any for the operator."""
        return user in (OPERATOR, account)
