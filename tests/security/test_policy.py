"""RBAC as data: every role × action, scope as 404, MFA for state changes, anonymous only on health."""

from __future__ import annotations

import pytest

from cvdeploy.security.policy import DEFAULT_POLICY, ROLES, Policy, unknown_model
from cvdeploy.serve.errors import Forbidden, NotFound, Unauthorized
from cvdeploy.serve.security import ACTIONS, Principal


def who(role: str, models: str | None = None, mfa: bool = False) -> Principal:
    scope = frozenset(m for m in models.split(",") if m) if models is not None else None
    return Principal(
        f"key:{role}", "api-key", frozenset({role}), {"source": "10.0.0.1"}, scope, "totp" if mfa else None
    )


#: what each role may do (with MFA where needed), straight from the issue
ALLOWED = {
    "viewer": {"health", "read"},
    "predictor": {"health", "read", "infer"},
    "operator": {"health", "read", "infer", "load", "unload", "rollback"},
    "admin": set(ACTIONS),
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", ACTIONS)
def test_role_grants(role: str, action: str) -> None:
    p = who(role, mfa=True)
    if action in ALLOWED[role]:
        DEFAULT_POLICY.check(p, action, "model:shapes")
    else:
        with pytest.raises(Forbidden, match=f"may not {action}"):
            DEFAULT_POLICY.check(p, action, "model:shapes")


@pytest.mark.parametrize(("role", "action"), [("operator", "load"), ("operator", "unload"),
                                              ("operator", "rollback"), ("admin", "load"), ("admin", "rollback"),
                                              ("admin", "reconfigure")])  # fmt: skip
def test_state_changes_need_a_second_factor(role: str, action: str) -> None:
    with pytest.raises(Unauthorized, match="X-CVD-OTP") as err:
        DEFAULT_POLICY.check(who(role), action, "model:shapes")
    assert err.value.headers["WWW-Authenticate"].startswith("Bearer")
    DEFAULT_POLICY.check(who(role, mfa=True), action, "model:shapes")


def test_reads_need_no_second_factor_and_admin_reaches_future_routes() -> None:
    for action in ("health", "read", "infer", "metrics"):
        DEFAULT_POLICY.check(who("admin"), action, "server")
    DEFAULT_POLICY.check(who("admin", mfa=True), "admin:config", "server")  # a route added later


def test_role_escalation_is_refused_before_the_model_is_looked_at() -> None:
    # 403 for a model that exists, one that does not and one out of scope alike: nothing is revealed
    for resource in ("model:shapes", "model:no-such-model", "model:secret"):
        with pytest.raises(Forbidden):
            DEFAULT_POLICY.check(who("predictor", models="shapes"), "load", resource)
    with pytest.raises(Forbidden):
        DEFAULT_POLICY.check(who("viewer"), "infer", "model:shapes")
    with pytest.raises(Forbidden):
        DEFAULT_POLICY.check(who("operator", mfa=True), "metrics", "server")
    unknown_role = Principal("jwt:eve", "jwt", frozenset({"superuser"}), {})
    with pytest.raises(Forbidden):
        DEFAULT_POLICY.check(unknown_role, "read", "server")


def test_out_of_scope_is_indistinguishable_from_missing() -> None:
    p = who("predictor", models="shapes,people")
    DEFAULT_POLICY.check(p, "infer", "model:shapes")
    DEFAULT_POLICY.check(p, "infer", "model:people:2")
    with pytest.raises(NotFound) as err:
        DEFAULT_POLICY.check(p, "infer", "model:cars:1")
    assert err.value.message == unknown_model("cars")
    assert err.value.message == "unknown model 'cars'; the repository index lists the models you may use"
    assert DEFAULT_POLICY.visible(p, ["cars", "people", "shapes"]) == ["people", "shapes"]
    assert DEFAULT_POLICY.visible(who("viewer"), ["b", "a"]) == ["a", "b"]
    empty = who("predictor", models="")
    with pytest.raises(NotFound):
        DEFAULT_POLICY.check(empty, "infer", "model:shapes")


def test_anonymous_reaches_server_health_only() -> None:
    anon = Principal("anonymous", "anonymous", frozenset(), {"source": "1.2.3.4"})
    DEFAULT_POLICY.check(anon, "health", "server")
    for action, resource in (("health", "model:shapes"), ("read", "server"), ("infer", "model:shapes"),
                             ("metrics", "server"), ("load", "model:shapes")):  # fmt: skip
        with pytest.raises(Unauthorized, match="authentication required"):
            DEFAULT_POLICY.check(anon, action, resource)
    DEFAULT_POLICY.check(Principal.system(), "load", "model:shapes")


def test_a_policy_is_data() -> None:
    custom = Policy(grants={"auditor": frozenset({"read", "metrics"})})
    custom.check(Principal("u", "jwt", frozenset({"auditor"}), {}), "metrics", "server")
    with pytest.raises(Forbidden):
        custom.check(Principal("u", "jwt", frozenset({"auditor"}), {}), "infer", "model:x")
