"""Query-string parameters shared by the read endpoints."""
from __future__ import annotations

import datetime as dt

from flask import request

from monitor.foundation.errors import ApiError
from monitor.foundation.events import parse_timestamp


def time_arg(name: str, default: dt.datetime | None = None) -> dt.datetime | None:
    """``?name=`` as an ISO 8601 time or epoch seconds; a 400 naming the parameter when it is neither."""
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        return parse_timestamp(float(raw) if raw.replace(".", "", 1).isdigit() else raw)
    except ValueError as exc:
        raise ApiError(400, "bad_request", f"{name}: {exc}") from None
