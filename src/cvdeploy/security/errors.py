"""What the security layer refuses with, as server errors (status codes the transport answers with).

ServeError (cvdeploy.serve.errors)
├── Unauthorized 401
│   └── AuthFailure       401   credentials presented and refused; ``reason`` goes to the audit log
└── TooManyRequests       429   a rate limit or the failed-authentication slowdown (``Retry-After``);
                                defined in ``cvdeploy.serve.errors`` with the other statuses
"""

from __future__ import annotations

from cvdeploy.serve.errors import TooManyRequests, Unauthorized

__all__ = ["AuthFailure", "TooManyRequests"]

BEARER_CHALLENGE = 'Bearer realm="cvdeploy"'


class AuthFailure(Unauthorized):
    """Credentials that were refused. ``message`` is what the client reads; ``reason`` is for the audit
    row only (it may say more, e.g. which key id was tried); neither ever holds the secret."""

    def __init__(self, message: str, reason: str, key_id: str | None = None) -> None:
        super().__init__(message, {"WWW-Authenticate": f'{BEARER_CHALLENGE}, error="invalid_token"'})
        self.reason = reason
        self.key_id = key_id
