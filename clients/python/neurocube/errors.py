"""Errors raised for the server's answers: one class per kind of status, each
carrying the server's JSON error (`code`, `error`, `message` and the fields
it names)."""
from __future__ import annotations

import json
from http import HTTPStatus
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


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def from_response(r) -> NeurocubeError:
    """The exception for a failed `requests` response."""
    return from_status(r.status_code, r.content, r.url, r.reason)


def from_status(status: int, content: bytes, url: str = "",
                reason: Optional[str] = None) -> NeurocubeError:
    """The exception for a failed answer: its status and its body (the
    server's JSON error, or text)."""
    try:
        body = json.loads(content)
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    text = content[:500].decode("utf-8", "replace")
    message = body.get("message") or text or reason or _phrase(status)
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else NeurocubeError
    return cls(status, message, body.get("code"), body.get("error"), body, url)
