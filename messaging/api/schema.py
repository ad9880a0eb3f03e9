"""The OpenAPI document's error answers: every operation lists the errors it can give.

drf-spectacular documents only the successful answers it infers. Clients (and
schemathesis' status-code check) need the errors too, in the one shape
`messaging/api/errors.py` gives them, and the same whatever the throttle
settings of the server that renders the document.
"""

ERROR_SCHEMA = {
    "type": "object",
    "description": "Every REST error (docs/protocol.md).",
    "properties": {
        "detail": {"type": "string", "description": "What went wrong, for a person."},
        "code": {
            "type": "string",
            "description": "bad_request, unauthorized, token_not_valid (and SimpleJWT's other "
            "token codes), forbidden, not_found, rate_limited, unavailable…",
        },
        "errors": {"type": "object", "description": "Validation errors by field (400)."},
        "retryAfterMs": {"type": "integer", "description": "With 429: when to try again."},
    },
    "required": ["detail", "code"],
}

ERRORS = {
    "400": "The request is malformed or a field is invalid.",
    "401": "No valid credentials (a missing, expired or ended token).",
    "403": "Authenticated, but not allowed.",
    "404": "Not found, or not visible to the caller.",
    "429": "Too many requests; see `Retry-After`.",
    "503": "The database is unavailable; nothing was stored.",
}


def document_error_responses(result, generator, request, public):
    """drf-spectacular postprocessing hook: add the error answers to every operation."""
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = ERROR_SCHEMA
    reference = {"$ref": "#/components/schemas/Error"}
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for status, description in ERRORS.items():
                operation["responses"].setdefault(
                    status,
                    {
                        "description": description,
                        "content": {"application/json": {"schema": reference}},
                    },
                )
    return result
