"""HTTP-facing errors of the server, each carrying its status code.

    ServeError                  answered as ``{"error": message}`` with ``status``
    ├── BadRequest        400   malformed JSON, wrong tensor shape or dtype, bad parameter
    ├── Unauthorized      401   no valid credentials (raised by an ``Authenticator``)
    ├── Forbidden         403   the principal may not do this (raised by an ``Authorizer``)
    ├── NotFound          404   unknown model or version
    ├── Conflict          409   a repository change that contradicts the current state
    ├── PayloadTooLarge   413   body over ``limits.max_body_bytes`` or image over ``max_image_pixels``
    ├── UnsupportedMedia  415   a content type or image format that is not accepted
    ├── Overloaded        503   the model's queue is full (sent with ``Retry-After``)
    ├── NotReady          503   no version of the model is loaded yet
    └── Timeout           504   the request waited longer than the model's ``timeout_s``

User mistakes raised by the library (:class:`cvdeploy.errors.CvdeployError`) are answered 400
with their message; anything else is logged with the request id and answered as a plain 500.
"""

from __future__ import annotations


class ServeError(Exception):
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


class Conflict(ServeError):
    status = 409


class PayloadTooLarge(ServeError):
    status = 413


class UnsupportedMedia(ServeError):
    status = 415


class Overloaded(ServeError):
    status = 503

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message, {"Retry-After": str(max(1, int(retry_after_s)))})


class NotReady(ServeError):
    status = 503


class Timeout(ServeError):
    status = 504
