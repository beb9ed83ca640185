"""What every HTTP view shares: the JSON error it answers with, and reading its query parameters.

API errors are always a JSON body naming the problem (``{"error", "message"}``),
never a stack trace; a bad parameter is a 400 naming the parameter.
"""
from __future__ import annotations

import datetime as dt

from flask import request

from monitor.foundation.clock import parse_time

# How long a client is told to wait when the store is unavailable (HTTP Retry-After, gRPC RetryInfo).
RETRY_AFTER_SECONDS = 5


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None, **extra):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict:
        return {"error": self.code, "message": self.message, **self.extra}


def time_arg(name: str, default: dt.datetime | None = None) -> dt.datetime | None:
    """``?name=`` as an ISO 8601 time or epoch seconds (an empty value counts as absent); a 400 naming
    the parameter when it is neither."""
    raw = request.args.get(name)
    if not raw:
        return default
    try:
        return parse_time(raw)
    except ValueError as exc:
        raise ApiError(400, "bad_request", f"{name}: {exc}") from None
