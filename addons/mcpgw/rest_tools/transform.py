"""A tool route's `request_transform` on its REST calls, as Kong's request-transformer on the
tool's route would change the requests that route sends.

The home route's operations (transform.py's semantics: remove, rename, replace, add, append on
headers and query string) are applied to the finished REST request after the tool's headers and
the credential mediation, in the pipeline's order for a forwarded request. One exception keeps
each operation applied once: when the tool is the serving route's own and the client's headers
are forwarded, those headers already went through this route's transform (its phase ran on the
client's request), so only the query string operations are applied again (an `append` would
otherwise add its value twice). Compiled once per policy version."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mitmproxy import http

from ..credentials import Plan
from ..policy.derived import PerPolicy

if TYPE_CHECKING:
    from ..policy.models import Policy

_SECTIONS = ("remove", "rename", "replace", "add", "append")


def _compile(policy: "Policy") -> dict[str, tuple[Plan, Plan | None]]:
    plans: dict[str, tuple[Plan, Plan | None]] = {}
    for name, route in policy.routes.items():
        ops = route.request_transform
        if route.rest_tools is None or ops is None or not ops.has_operations():
            continue
        query_only = ops.model_copy(update={s: getattr(ops, s).model_copy(update={"headers": []}) for s in _SECTIONS})
        plans[name] = (Plan("request_transform", ops),
                       Plan("request_transform", query_only) if query_only.has_operations() else None)
    return plans


_plans = PerPolicy(_compile)


def apply(policy: "Policy", home: str, request: http.Request, headers_transformed: bool) -> None:
    """`headers_transformed`: the request carries client headers this route's transform already shaped."""
    plans = _plans(policy).get(home)
    if plans is None:
        return
    plan = plans[1] if headers_transformed else plans[0]
    if plan is not None:
        plan.apply(request)
