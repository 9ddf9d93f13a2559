"""Errors raised for the server's answers: one class per kind of status, each
carrying the server's JSON error (`code`, `error`, `message` and the fields
it names)."""
from __future__ import annotations

from typing import Any, Dict, Optional


class NeurocubeError(Exception):
    """An answer the server refused or failed. `status` is the HTTP status,
    `code` the broad kind (`not_found`, `invalid_request`, ...), `error` the
    precise one (`unknown_table`, ...), `message` what to do about it."""

    def __init__(self, status: int, message: str, code: Optional[str] = None,
                 error: Optional[str] = None, body: Optional[Dict[str, Any]] = None,
                 url: str = ""):
        super().__init__(f"{status} {error or code or ''}: {message}".strip())
        self.status = status
        self.message = message
        self.code = code
        self.error = error
        self.body = body or {}
        self.url = url


class BadRequest(NeurocubeError):
    """400: the request itself is wrong (a field, a box, a name)."""


class Unauthorized(NeurocubeError):
    """401: no token, or a token the server does not know."""


class Forbidden(NeurocubeError):
    """403: the token's user lacks the role."""


class NotFound(NeurocubeError):
    """404: no such dataset, channel, table, version or route."""


class Conflict(NeurocubeError):
    """409: it exists already, or it is not ready."""


class Gone(NeurocubeError):
    """410: an expired version."""


class PayloadTooLarge(NeurocubeError):
    """413: the body or the answer is over a limit; ask for less."""


class Unprocessable(NeurocubeError):
    """422: rows that do not fit the table's schema (nothing was written)."""


class RateLimited(NeurocubeError):
    """429: over the rate limit (retried by the client first)."""


class ServerError(NeurocubeError):
    """5xx: the server failed."""


class Unavailable(ServerError):
    """503: overloaded or a store node is down (retried by the client first)."""


_BY_STATUS = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    413: PayloadTooLarge,
    422: Unprocessable,
    429: RateLimited,
    503: Unavailable,
}


def from_response(r) -> NeurocubeError:
    """The exception for a failed `requests` response."""
    try:
        body = r.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    message = body.get("message") or r.text[:500] or r.reason
    cls = _BY_STATUS.get(r.status_code)
    if cls is None:
        cls = ServerError if r.status_code >= 500 else NeurocubeError
    return cls(r.status_code, message, body.get("code"), body.get("error"), body, r.url)
