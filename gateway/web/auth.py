"""HTTP Basic authentication with the exchange's passwords (the broker's credentials):
an account sees only its own data, the operator everything. Passwords are compared in
constant time and never logged or echoed."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping

from gateway.protocol import GATEWAY, OPERATOR

__all__ = ["Credentials", "OPERATOR"]


class Credentials:
    """Who may log in to the web portal: accounts and the operator, by password."""

    def __init__(self, passwords: Mapping[str, str]) -> None:
        # Kept by reference: an account opened live, given a login in the broker's
        # credentials, may log in to the pages at once.
        self._passwords = passwords

    def user(self, authorization: str | None) -> str | None:
        """The user an ``Authorization: Basic ...`` header proves, or ``None``."""
        if not authorization or authorization[:6].lower() != "basic ":
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

    @staticmethod
    def may_see(user: str, account: str) -> bool:
        """May *user* see *account*'s data? Its own, or any for the operator."""
        return user in (OPERATOR, account)
