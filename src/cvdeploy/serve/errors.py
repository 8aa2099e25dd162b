"""The server's errors: part of the one :class:`cvdeploy.errors.CvdeployError` tree, each with its status.

    CvdeployError (cvdeploy.errors)
    └── ServeError                  answered as ``{"error": message}`` with ``status``
        ├── BadRequest        400   malformed JSON, wrong tensor shape or dtype, unknown or bad parameter
        │   └── HTTPVersion   400   a request line that is not HTTP/1.0 or HTTP/1.1 (not 505: what a client
        │                           sends is never answered 5xx)
        ├── Unauthorized      401   who are you? no or refused credentials (cvdeploy.security.errors.AuthFailure),
        │                           a missing second factor, anonymous callers changing model state
        ├── Forbidden         403   the principal may not do this; a path outside the load roots
        ├── NotFound          404   unknown model or version, or a model outside the caller's scope (the same
        │                           answer: :func:`unknown_model`); no bundle at a path under the load roots
        ├── RequestTimeout    408   the body did not arrive within ``limits.body_timeout_s``
        ├── Conflict          409   a repository change that contradicts the current state
        ├── PayloadTooLarge   413   body, image or request over a stated limit (the message names it)
        ├── UnsupportedMedia  415   a content type or image format that is not accepted
        ├── MisdirectedHost   421   a ``Host`` header outside ``security.allowed_hosts``
        ├── TooManyRequests   429   a rate limit, or the slowdown after failed authentications (``Retry-After``)
        ├── HeadersTooLarge   431   more header fields than ``limits.max_headers``
        ├── Overloaded        503   the model's queue is full (sent with ``Retry-After``)
        ├── NotReady          503   no version of the model is loaded yet
        └── Timeout           504   the request waited longer than the model's ``timeout_s``

Other user mistakes raised by the library (``CvdeployError``: a corrupt image, a bad bundle) are
answered 400 with their message; anything else is logged with the request id and answered as a
plain 500 that reveals nothing. The 5xx above are states of the server, never of a request's content.
"""

from __future__ import annotations

import math

from cvdeploy.errors import CvdeployError


class ServeError(CvdeployError):
    """An error answered with ``status`` and ``{"error": message}``."""

    status = 500

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(ServeError):
    status = 400


class Unauthorized(ServeError):
    status = 401


class Forbidden(ServeError):
    status = 403


class NotFound(ServeError):
    status = 404


class RequestTimeout(ServeError):
    status = 408


class Conflict(ServeError):
    status = 409


class PayloadTooLarge(ServeError):
    status = 413


class UnsupportedMedia(ServeError):
    status = 415


class MisdirectedHost(ServeError):
    status = 421


class TooManyRequests(ServeError):
    """429 with ``Retry-After`` in whole seconds (rounded up, at least 1)."""

    status = 429

    def __init__(self, message: str, retry_after_s: float) -> None:
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        super().__init__(message, {"Retry-After": str(self.retry_after_s)})


class HeadersTooLarge(ServeError):
    status = 431


class Overloaded(ServeError):
    status = 503

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message, {"Retry-After": str(max(1, int(retry_after_s)))})


class NotReady(ServeError):
    status = 503


class Timeout(ServeError):
    status = 504


class HTTPVersion(BadRequest):
    status = 400


def unknown_model(name: str) -> str:
    """The one message for a model that does not exist *or* lies outside the caller's scope: the two must
    read exactly alike, so that a scoped key learns nothing of the other models (and no list of them)."""
    shown = name if len(name) <= 100 else name[:100] + "..."
    return f"unknown model {shown!r}; the repository index lists the models you may use"
