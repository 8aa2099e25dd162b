"""The server's :class:`~cvdeploy.serve.security.Authorizer`: rate limits, then the RBAC policy, audited.

``authorize(principal, action, resource)``:

1. takes a token from the principal's and the source address's buckets (429 + ``Retry-After``) —
   except for ``health``: orchestrators probe every few seconds, often from an address that client
   traffic shares (a node behind NAT, a load balancer), and a probe refused 429 gets a healthy server
   restarted or taken out of rotation (a probe does no more work than the refusal of a flood would);
2. asks the :class:`~cvdeploy.security.policy.Policy` (401 who-are-you, 403 not-allowed, 404 out of
   scope — the same 404 as a missing model);
3. writes every refusal to the audit log (the action, the resource, the principal, why).

The principal's ``source`` attribute (set by :class:`~cvdeploy.security.authn.BearerAuthenticator`)
is the address the per-source limit counts.
"""

from __future__ import annotations

from cvdeploy.security.errors import TooManyRequests
from cvdeploy.security.policy import DEFAULT_POLICY, Policy, refusal
from cvdeploy.security.ratelimit import RateLimiter
from cvdeploy.serve.security import Event, EventSink, Principal

__all__ = ["RbacAuthorizer"]


class RbacAuthorizer:
    """Rate limits + RBAC + audit of denials, behind the ``Authorizer`` protocol."""

    #: actions that are never rate limited (see the module docstring)
    UNLIMITED: frozenset[str] = frozenset({"health"})

    def __init__(
        self,
        policy: Policy = DEFAULT_POLICY,
        limiter: RateLimiter | None = None,
        events: EventSink | None = None,
    ) -> None:
        self.policy = policy
        self.limiter = limiter
        self.events = events

    def authorize(self, principal: Principal, action: str, resource: str) -> None:
        source = principal.attributes.get("source")
        if self.limiter is not None and principal.kind != "system" and action not in self.UNLIMITED:
            try:
                self.limiter.check(None if principal.is_anonymous else principal.id, source)
            except TooManyRequests as exc:
                self._denied(principal, action, resource, exc.status, "rate limited")
                raise
        decision = self.policy.decide(principal, action, resource)
        if decision is not None:
            self._denied(principal, action, resource, decision.status, decision.reason)
            raise refusal(decision)

    def _denied(self, principal: Principal, action: str, resource: str, status: int, reason: str) -> None:
        if self.events is not None:
            details = {"status": status, "reason": reason, "source": principal.attributes.get("source")}
            self.events.emit(Event(action, resource, principal.id, "failure", details))
