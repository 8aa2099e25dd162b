"""What the security layer refuses with, as server errors (status codes the transport answers with).

    ServeError (cvdeploy.serve.errors)
    ├── Unauthorized 401
    │   └── AuthFailure       401   credentials presented and refused; ``reason`` goes to the audit log
    └── TooManyRequests       429   a rate limit or the failed-authentication slowdown (``Retry-After``)

``TooManyRequests`` belongs in ``cvdeploy.serve.errors`` beside the other statuses; it is defined
here until the server's error tree takes it (``cvdeploy.serve`` is not edited from this package).
"""

from __future__ import annotations

import math

from cvdeploy.serve.errors import ServeError, Unauthorized

__all__ = ["AuthFailure", "TooManyRequests"]

BEARER_CHALLENGE = 'Bearer realm="cvdeploy"'


class AuthFailure(Unauthorized):
    """Credentials that were refused. ``message`` is what the client reads; ``reason`` is for the audit
    row only (it may say more, e.g. which key id was tried); neither ever holds the secret."""

    def __init__(self, message: str, reason: str, key_id: str | None = None) -> None:
        super().__init__(message, {"WWW-Authenticate": f'{BEARER_CHALLENGE}, error="invalid_token"'})
        self.reason = reason
        self.key_id = key_id


class TooManyRequests(ServeError):
    """429 with ``Retry-After`` in whole seconds (rounded up, at least 1)."""

    status = 429

    def __init__(self, message: str, retry_after_s: float) -> None:
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        super().__init__(message, {"Retry-After": str(self.retry_after_s)})
