"""The OpenAPI document: FastAPI's, completed with what it cannot see by itself.

Routes read their bodies themselves (see bodies.py), so the request models are added to the
components and referenced from each route; the input rules that core.validation enforces in
plain Python are written into the schema; and every error status a route can answer is
documented with the BillingOS envelope. tests/server/test_reads.py checks the document;
tests/server/test_properties.py sends generated requests (hypothesis) and checks that none is
answered with a 5xx.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from billing_ui.core import _constants as C
from billing_ui.core.models import ErrorEnvelope
from billing_ui.server import tokens


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a request body we read ourselves (see bodies.py)."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


_ERROR_TEXT = {
    400: "VAL_INVALID_INPUT: invalid input (details.fieldErrors names each field and broken "
    "rule), or refused: 'Customer not found: X', 'Feature is not a usage quota type', "
    "'quota_exceeded' (hard limit)",
    401: "Missing, wrong, expired or revoked credential, or the wrong kind of credential",
    404: "No active subscription with this feature (or no such feature)",
    409: "Idempotency key already used for a different event in the last 24 hours",
    429: "Too many tracked events for this customer; see Retry-After",
    503: "The database is unavailable",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error statuses a route can answer (BillingOS envelope)."""
    return {s: {"model": ErrorEnvelope, "description": _ERROR_TEXT[s]} for s in statuses}


def build_openapi(app: FastAPI, request_models: Sequence[type[BaseModel]]) -> dict[str, Any]:
    """FastAPI's schema, plus the request models that routes validate themselves, the
    input rules, and the error envelope for every error status."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        _, defs = models_json_schema(
            [(m, "validation") for m in request_models],
            ref_template="#/components/schemas/{model}",
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, definition in defs.get("$defs", {}).items():
            components.setdefault(name, definition)
        _document_rules(schema)
        app.openapi_schema = schema
    return app.openapi_schema


_TEXT_ID = {"type": "string", "minLength": 1, "maxLength": C.CUSTOMER_ID_MAX_LEN}
_RULES: dict[str, dict[str, Any]] = {
    "feature_key": {
        "type": "string",
        "minLength": 1,
        "maxLength": C.FEATURE_KEY_MAX_LEN,
        "pattern": C.FEATURE_KEY_PATTERN.pattern,
    },
    "customer_id": _TEXT_ID,
    "externalUserId": _TEXT_ID,
    "external_user_id": _TEXT_ID,
    "quantity": {
        "type": "number",
        "exclusiveMinimum": 0,
        "maximum": C.MAX_QUANTITY,
        "multipleOf": 10**-C.QUANTITY_DECIMALS,
    },
    "jti": {"type": "string", "pattern": tokens.JTI_PATTERN.pattern},
}
_RULES["products"] = {
    "type": "array",
    "items": _RULES["feature_key"],
    "maxItems": 20,
    "uniqueItems": True,
}
"""The input rules of billing_ui.core.validation, stated in the schema. The models enforce
them with plain-Python validators, which pydantic cannot describe in JSON Schema."""


def _document_rules(schema: dict[str, Any]) -> None:
    for name, model in schema["components"]["schemas"].items():
        if name.endswith("Request"):
            for field, prop in model.get("properties", {}).items():
                if field in _RULES and "$ref" not in prop:
                    prop.update(_RULES[field])
                    prop.pop("anyOf", None)
    for operations in schema["paths"].values():
        for operation in operations.values():
            for param in operation.get("parameters", []):
                rule = _RULES.get(param["name"])
                if rule is not None:
                    param["schema"] = {**param.get("schema", {}), **rule}
                    param["schema"].pop("anyOf", None)
