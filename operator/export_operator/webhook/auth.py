"""Who is calling: the principal of a bearer token, an EventBridge API key or an SNS topic.

Credentials are looked up by digest (`export_operator.principals`), so the time taken says
nothing about which secret nearly matched.
"""

from __future__ import annotations

from aiohttp import web

from export_operator.principals import Principal, Principals


def bearer_token(request: web.Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def bearer_principal(request: web.Request, principals: Principals) -> Principal | None:
    """The principal of the request's bearer token, else None."""
    token = bearer_token(request)
    return principals.for_token(token) if token is not None else None


def api_key_principal(
    request: web.Request, *, header: str, principals: Principals
) -> Principal | None:
    """The principal of the request's EventBridge API key, else None."""
    value = request.headers.get(header)
    return principals.for_api_key(value) if value is not None else None
