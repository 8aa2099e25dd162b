"""Role-based access control as data: which role may do which action, and when a second factor is due.

    role        actions                                             second factor (X-CVD-OTP)
    viewer      health, read                                        –
    predictor   health, read, infer                                 –
    operator    health, read, infer, load, unload, rollback         for load, unload, rollback
    admin       everything (metrics, future admin routes too)       for every state change

A decision is made in a fixed order, so what a caller learns never depends on what exists:

1. **anonymous** callers get ``health`` on ``server`` and nothing else → 401 (who are you?);
2. the **role** must grant the action → 403, decided before any model is looked at, so a denial
   reads the same for a model that exists and for one that does not;
3. the **scope**: a principal limited to some models gets 404 for any other model, with the same
   message as a model that does not exist (:func:`unknown_model`) — out of scope is indistinguishable
   from missing;
4. **MFA**: a state change (any action not in ``Policy.read_only``) needs ``principal.mfa``, set by
   the authenticator only after a valid, never-used TOTP code (or a JWT whose ``amr`` says so) → 401.

Scopes and MFA state are typed fields of :class:`~cvdeploy.serve.security.Principal`: ``models``
(a frozenset of model names; None: every model) and ``mfa`` (how the second factor was shown:
``totp`` or ``jwt-amr``; None: not shown).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from cvdeploy.serve.errors import Forbidden, NotFound, Unauthorized, unknown_model
from cvdeploy.serve.security import Principal

__all__ = [
    "DEFAULT_POLICY",
    "ROLES",
    "Decision",
    "Policy",
    "model_of",
    "refusal",
    "scope_of",
    "unknown_model",
]

#: The roles, least to most privileged.
ROLES: tuple[str, ...] = ("viewer", "predictor", "operator", "admin")
ANY = "*"


def model_of(resource: str) -> str | None:
    """``model:NAME[:VERSION]`` → ``NAME``; any other resource → None."""
    if not resource.startswith("model:"):
        return None
    return resource[len("model:") :].split(":", 1)[0]


def scope_of(principal: Principal) -> frozenset[str] | None:
    """The models a principal is limited to, or None for every model."""
    return principal.models


@dataclass(frozen=True)
class Decision:
    """Why a request was refused (``status`` 401/403/404), for the error and the audit row."""

    status: int
    reason: str
    message: str


@dataclass(frozen=True)
class Policy:
    """Grants per role (``*`` = every action), the actions that change nothing, and anonymous access."""

    grants: Mapping[str, frozenset[str]]
    read_only: frozenset[str] = frozenset({"health", "read", "infer", "metrics"})
    anonymous: Mapping[str, frozenset[str]] = field(default_factory=lambda: {"health": frozenset({"server"})})

    def allows(self, roles: Iterable[str], action: str) -> bool:
        for role in roles:
            granted = self.grants.get(role, frozenset())
            if ANY in granted or action in granted:
                return True
        return False

    def needs_mfa(self, action: str) -> bool:
        """Every state change — any action outside ``read_only``, known today or added later."""
        return action not in self.read_only

    def decide(self, principal: Principal, action: str, resource: str) -> Decision | None:
        """None when allowed, else the refusal (see the module docstring for the order)."""
        if principal.kind == "system":
            return None
        if principal.is_anonymous:
            if resource in self.anonymous.get(action, frozenset()):
                return None
            return Decision(
                401,
                "unauthenticated",
                "authentication required: send 'Authorization: Bearer <API key or JWT>'",
            )
        if not self.allows(principal.roles, action):
            roles = ", ".join(sorted(principal.roles)) or "no role"
            return Decision(403, "forbidden", f"{principal.id} ({roles}) may not {action} {resource}")
        model = model_of(resource)
        scope = scope_of(principal)
        if model is not None and scope is not None and model not in scope:
            return Decision(404, "out of scope", unknown_model(model))
        if self.needs_mfa(action) and not principal.mfa:
            return Decision(
                401,
                "second factor missing",
                f"{action} needs a second factor: send a current TOTP code in the X-CVD-OTP header "
                "(enroll with 'cvdeploy mfa enroll')",
            )
        return None

    def visible(self, principal: Principal, models: Collection[str]) -> list[str]:
        """The models of ``models`` this principal may know of (for indexes and 'not found' hints)."""
        return sorted(m for m in models if principal.may_see(m))

    def check(self, principal: Principal, action: str, resource: str) -> None:
        """Raise the server error for :meth:`decide`'s refusal (401/403/404), or return."""
        d = self.decide(principal, action, resource)
        if d is not None:
            raise refusal(d)


def refusal(d: Decision) -> Exception:
    """The server error (401/403/404) that answers a refusal."""
    if d.status == 401:
        return Unauthorized(d.message, {"WWW-Authenticate": 'Bearer realm="cvdeploy"'})
    if d.status == 404:
        return NotFound(d.message)
    return Forbidden(d.message)


DEFAULT_POLICY = Policy(
    grants={
        "viewer": frozenset({"health", "read"}),
        "predictor": frozenset({"health", "read", "infer"}),
        "operator": frozenset({"health", "read", "infer", "load", "unload", "rollback"}),
        "admin": frozenset({ANY}),
    }
)
