"""The OpenAPI document as the server really answers: problem responses, and links.

Litestar documents the handlers' successes from their types, and its own validation failures as
``application/json``. giftflow answers every failure as ``application/problem+json`` (RFC 9457)
with a stable ``code``, so the served document replaces the failure responses of every operation
with those problem responses.

The document also carries OpenAPI links (``LINKS``): how the id in one answer feeds the next
call, for instance the ``id`` of a created stream into ``startStream``. Client generators and
stateful fuzzers (Schemathesis) follow them. Operation ids are the handlers' names in camel case.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping
from typing import Any, Final

from litestar.handlers import HTTPRouteHandler
from litestar.types import Method
from litestar.types.internal_types import PathParameterDefinition

PROBLEM_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["type", "title", "status", "code", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "code": {"type": "string", "description": "a stable machine code (SPEC.md §8)"},
        "detail": {"type": "string"},
        "rule": {"type": "string", "description": "the precise rule, for grouped codes"},
    },
    "additionalProperties": True,
}
"""The body of every failure."""

_FAILURES: Final = {
    "400": "validation_error: wrong types, values out of range, malformed JSON",
    "401": "unauthorized: no key, or an unknown or revoked key",
    "403": "forbidden: the key's role or owner does not allow it",
    "404": "not_found (or provider_unconfigured: a provider webhook not set up here)",
    "409": "idempotency_conflict, idempotency_in_progress, invalid_state",
    "413": "body_too_large",
    "422": "a business refusal, with its code (and rule)",
    "429": "rate_limited",
    "500": "internal_error",
    "503": "overloaded or not_ready",
}
"""The failures any operation may answer, and what they mean."""

_METHODS: Final = ("get", "put", "post", "delete", "patch")
_COMPONENT: Final = "#/components/schemas/"


def with_problems(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with the problem responses on every operation (a copy).

    Request bodies are decoded strictly, unknown fields refused, and their schemas say so.
    """
    served = copy.deepcopy(document)
    components = served.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = PROBLEM_SCHEMA
    reference = {"$ref": "#/components/schemas/Problem"}
    for path in served.get("paths", {}).values():
        for method in _METHODS:
            operation = path.get(method)
            if operation is None:
                continue
            for body in operation.get("requestBody", {}).get("content", {}).values():
                name = body.get("schema", {}).get("$ref", "").removeprefix(_COMPONENT)
                if name in components:
                    components[name]["additionalProperties"] = False
            responses = operation.setdefault("responses", {})
            for status, meaning in _FAILURES.items():
                responses[status] = {
                    "description": meaning,
                    "content": {"application/problem+json": {"schema": reference}},
                }
    return served


def with_choices(document: dict[str, Any],
                 choices: Mapping[str, Collection[str]]) -> dict[str, Any]:
    """``document`` with the values this server's configuration accepts, as enums (in place).

    ``choices`` maps ``Component.property`` (a body field) or ``operationId.parameter`` (a path
    or query parameter) to the accepted values, such as the regions of the economy file.
    """
    components = document.get("components", {}).get("schemas", {})
    parameters = {f"{operation['operationId']}.{parameter['name']}": parameter["schema"]
                  for path in document.get("paths", {}).values() for method in _METHODS
                  if (operation := path.get(method))
                  for parameter in operation.get("parameters", ())}
    for name, values in choices.items():
        owner, _, field = name.partition(".")
        schema = (components.get(owner, {}).get("properties", {}).get(field)
                  or parameters.get(name))
        if schema is not None:
            schema["enum"] = sorted(values)
    return document


def operation_id(handler: HTTPRouteHandler, method: Method,
                 path: list[str | PathParameterDefinition]) -> str:
    """The handler's name in camel case (``create_stream`` → ``createStream``)."""
    del method, path  # the names are unique on their own
    function = handler.fn
    while hasattr(function, "func"):  # a sync handler is wrapped (for threads, or twice)
        function = function.func
    head, *rest = function.__name__.split("_")
    return head + "".join(word.title() for word in rest)


def _from(field: str) -> str:
    return f"$response.body#/{field}"


LINKS: Final[dict[str, dict[str, dict[str, Any]]]] = {
    # source operationId: {link name: {target operationId, parameters, requestBody}}
    "createUser": {
        "GetWallet": {"operationId": "getWallet", "parameters": {"user_id": _from("id")}},
        "BuyCoins": {"operationId": "createPurchase", "requestBody": {"user_id": _from("id")}},
        "ListReceipts": {"operationId": "listReceipts", "parameters": {"user_id": _from("id")}},
        "ListPayouts": {"operationId": "listPayouts", "parameters": {"user_id": _from("id")}},
        "GetLimits": {"operationId": "getLimits", "parameters": {"user_id": _from("id")}},
        "SetLimit": {"operationId": "setLimit", "parameters": {"user_id": _from("id")}},
        "SetKyc": {"operationId": "setKyc", "parameters": {"user_id": _from("id")}},
        "EnrollTwoFactor": {"operationId": "enrollTwoFactor",
                            "parameters": {"user_id": _from("id")}},
        "CreateStream": {"operationId": "createStream",
                         "requestBody": {"creator_id": _from("id")}},
        "RequestPayout": {"operationId": "requestPayout",
                          "requestBody": {"creator_id": _from("id")}},
        "GetStatement": {"operationId": "getStatement", "parameters": {"creator_id": _from("id")}},
        "CreateOverlayToken": {"operationId": "createOverlayToken",
                               "parameters": {"creator_id": _from("id")}},
        "AppointModerator": {"operationId": "appointModerator",
                             "parameters": {"creator_id": _from("id")}},
        "CreateTeam": {"operationId": "createTeam", "requestBody": {"owner_id": _from("id")}},
        "Freeze": {"operationId": "freezeUser", "requestBody": {"user_id": _from("id")}},
    },
    "enrollTwoFactor": {
        "ConfirmTwoFactor": {"operationId": "confirmTwoFactor",
                             "parameters": {"user_id": "$request.path.user_id"}},
    },
    "createPurchase": {
        "GetWallet": {"operationId": "getWallet",
                      "parameters": {"user_id": "$request.body#/user_id"}},
        "GetReceipt": {"operationId": "getReceipt",
                       "parameters": {"number": _from("receipt_id")}},
    },
    "createStream": {
        "StartStream": {"operationId": "startStream", "parameters": {"stream_id": _from("id")}},
        "EndStream": {"operationId": "endStream", "parameters": {"stream_id": _from("id")}},
        "SendGift": {"operationId": "sendGift", "parameters": {"stream_id": _from("id")}},
    },
    "startStream": {
        "SendGift": {"operationId": "sendGift", "parameters": {"stream_id": _from("id")}},
        "EndStream": {"operationId": "endStream", "parameters": {"stream_id": _from("id")}},
    },
    "requestPayout": {
        "GetPayout": {"operationId": "getPayout", "parameters": {"payout_id": _from("id")}},
    },
    "reviewQueue": {
        "ReviewHold": {"operationId": "reviewHold", "parameters": {"hold_id": _from("0/id")}},
    },
    "createTeam": {
        "AddMember": {"operationId": "setTeamMember", "parameters": {"team_id": _from("id")}},
    },
    "proposeAdjustment": {
        "Approve": {"operationId": "approveAdjustment",
                    "parameters": {"adjustment_id": _from("id")}},
        "Reject": {"operationId": "rejectAdjustment",
                   "parameters": {"adjustment_id": _from("id")}},
    },
    "createKey": {
        "RevokeKey": {"operationId": "revokeKey", "parameters": {"key_id": _from("id")}},
    },
    "createOverlayToken": {
        "Rotate": {"operationId": "rotateOverlayToken",
                   "parameters": {"creator_id": "$request.path.creator_id",
                                  "key_id": _from("id")}},
        "Revoke": {"operationId": "revokeOverlayToken",
                   "parameters": {"creator_id": "$request.path.creator_id",
                                  "key_id": _from("id")}},
    },
    "appointModerator": {
        "Dismiss": {"operationId": "dismissModerator",
                    "parameters": {"creator_id": _from("creator_id"),
                                   "user_id": _from("user_id")}},
    },
    "registerEndpoint": {
        "Disable": {"operationId": "disableEndpoint", "parameters": {"endpoint_id": _from("id")}},
        "Enable": {"operationId": "enableEndpoint", "parameters": {"endpoint_id": _from("id")}},
        "Deliveries": {"operationId": "listDeliveries",
                       "parameters": {"endpoint_id": _from("id")}},
    },
    "listDeliveries": {
        "Attempts": {"operationId": "listAttempts", "parameters": {"delivery_id": _from("0/id")}},
        "Redeliver": {"operationId": "redeliver", "parameters": {"delivery_id": _from("0/id")}},
    },
}
"""How one operation's answer feeds the next (OpenAPI links, on each source's success)."""


def with_links(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with ``LINKS`` on each source operation's success response (in place)."""
    for path in document.get("paths", {}).values():
        for method in _METHODS:
            operation = path.get(method)
            links = LINKS.get(operation.get("operationId", "")) if operation else None
            if links is None:
                continue
            status = min(code for code in operation["responses"] if code.startswith("2"))
            operation["responses"][status]["links"] = copy.deepcopy(links)
    return document
