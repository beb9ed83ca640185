"""The one filter builder: equality conditions on known columns, as SQL with parameters.

Pages and APIs filter by service, feature, model and so on. Every such filter
becomes ``AND column = {f_column:String}`` through here, so the value is always
a bound parameter and the column name is always one the caller allowed (a name
from a query string never reaches SQL unchecked).
"""
from __future__ import annotations

from typing import Mapping, Sequence


def where_equal(filters: Mapping[str, str | None], columns: Sequence[str], alias: str = "") -> tuple[str, dict]:
    """(" AND c = {f_c:String} ..." for each of ``columns`` with a non-empty filter value, its parameters).

    A filter named outside ``columns`` is a ValueError naming it. ``alias`` qualifies the
    columns (``q`` gives ``q.service``); the empty string means no filter at all.
    """
    unknown = [name for name, value in filters.items() if value and name not in columns]
    if unknown:
        raise ValueError(f"{unknown[0]}: cannot filter on this; filters are {', '.join(columns)}")
    sql, params = "", {}
    for name in columns:
        value = filters.get(name)
        if value:
            sql += f" AND {alias + '.' if alias else ''}{name} = {{f_{name}:String}}"
            params[f"f_{name}"] = value
    return sql, params
