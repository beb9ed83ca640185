"""Event bodies to rows: a JSON array (or one object) or NDJSON, where one bad row is one rejection.

Shared by the HTTP API and ``nlpmon ingest``. A row that is not JSON, or nests
deeper than any event can (past ``MAX_DEPTH`` levels, where parsers and every
later walk of the row would overflow the stack), becomes an :class:`Unparseable`
row with its reason, which the pipeline rejects and keeps in ``rejected_events``;
the other rows of the body land.
"""
from __future__ import annotations

import json

import orjson

from monitor.ingest.pipeline import Unparseable


class TooManyRows(Exception):
    """A body holds more rows than a batch may (the API answers 413)."""


def _reject_constant(name: str) -> float:
    # NaN and Infinity are not JSON; keep them so validation names the field.
    return float(name.replace("Infinity", "inf"))


class TooDeep(Exception):
    """Nested past what the parsers (orjson: 1,024 levels; the stdlib: the recursion limit) can read."""


def loads(text: str):
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):
            raise TooDeep(str(exc)) from None
    # orjson refuses NaN, Infinity, huge integers and lone surrogates outright; the stdlib
    # reads them, so that the row with the problem is rejected rather than the whole batch.
    try:
        data = json.loads(text, parse_constant=_reject_constant)
        if isinstance(data, list):
            return [_encodable(row) for row in data]
        return _encodable(data)
    except RecursionError:
        raise TooDeep("nested too deeply for the parser") from None


# -- nesting ----------------------------------------------------------------------------------------
# No field of the event contract nests more than two levels (a row's tags or embedding), and deeper
# values overflow the stack wherever a row is walked or written back out (validation, rejected_events),
# so a row nested deeper than this is rejected on its own, before anything walks it.
MAX_DEPTH = 64
TOO_DEEP = f"nesting deeper than {MAX_DEPTH} levels"
_SCAN_BLOCK = 1 << 18  # bytes the scanner looks at a time: its memory stays small for a body of any size
_CONTAINERS = {list, dict}  # what the JSON parsers make of arrays and objects (never subclasses)


def too_deep(value, limit: int = MAX_DEPTH) -> bool:
    """Whether containers nest more than ``limit`` levels in a parsed value (a row object is level 1)."""
    stack = [(value, 1)] if type(value) in _CONTAINERS else []
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if type(node) is dict else node
        if _CONTAINERS.isdisjoint(map(type, children)):  # the common case (an embedding's floats), at C speed
            continue
        stack.extend((child, depth + 1) for child in children if type(child) in _CONTAINERS)
    return False


def _top_level_spans(raw: bytes, max_rows: int) -> list[tuple[int, int, int]]:
    """(start, end, depth) of each element of a JSON array body, or of the one object a body holds,
    found without parsing: byte offsets into ``raw``; ``depth`` is how deep the element's containers
    nest (an object row is 1, a scalar 0).

    A small scanner, vectorized so that a body crafted to be slow (millions of brackets or tiny
    strings) costs what a normal one does: a quote preceded by an odd run of backslashes is escaped,
    the other quotes open and close strings, brackets outside strings count the depth, and commas at
    the depth of the rows separate them. Only brackets' number is matched, not their kind: the
    closing bracket of the body is checked, and each row is parsed on its own afterwards (or rejected
    as too deep, whatever it holds). UTF-8 never puts these ASCII bytes inside a multi-byte character.

    Raises ValueError when the body is not an array or an object or does not balance (truncated, a
    string never closed, data after the end): where one row ends is then unknowable, so the body is
    refused as a whole.
    """
    import numpy as np
    first = len(raw) - len(raw.lstrip())
    if first == len(raw) or raw[first] not in b"[{":
        raise ValueError("body is neither a JSON array nor a JSON object")
    array = raw[first] == ord("[")
    base = 1 if array else 0  # the depth of the rows' own level: inside the body's bracket, or the body
    spans: list[tuple[int, int, int]] = []
    start, deepest = first + base, 0  # the current element: its first byte, the deepest level in it so far
    depth, backslashes, in_string = 0, 0, 0  # carried from one block to the next
    data = np.frombuffer(raw, dtype=np.uint8)
    for lo in range(first, len(raw), _SCAN_BLOCK):
        block = data[lo:lo + _SCAN_BLOCK]
        at = np.arange(len(block), dtype=np.int32)
        # The run of backslashes ending at each byte, and so the run just before each quote.
        last_other = np.maximum.accumulate(np.where(block == 92, -1, at))
        run = at - last_other + np.where(last_other < 0, backslashes, 0)
        before = np.concatenate(([backslashes & 1], run[:-1] & 1))
        quote = (block == 34) & (before == 0)
        # Inside a string: an odd number of quotes so far (its opening quote is inside, its closing one not).
        inside = (np.cumsum(quote, dtype=np.int32) + in_string) & 1 == 1
        step = np.zeros(len(block), dtype=np.int8)
        step[((block == 91) | (block == 123)) & ~inside] = 1
        step[((block == 93) | (block == 125)) & ~inside] = -1
        level = np.cumsum(step, dtype=np.int64) + depth  # the depth after each byte
        closed = np.flatnonzero(level == 0)
        stop = int(closed[0]) if len(closed) else len(block)  # the body's closing bracket, or the block's end
        body = level[:stop + 1] if len(closed) else level
        if array:
            commas = np.flatnonzero((block[:stop] == 44) & ~inside[:stop] & (level[:stop] == 1))
            if len(spans) + len(commas) > max_rows:
                raise TooManyRows(f"over {max_rows} events in one batch; the limit is {max_rows}")
            # Pieces of the block: what continues the current element, then from each comma on.
            starts = commas if len(commas) and commas[0] == 0 else np.concatenate(([0], commas))
            maxima = np.maximum.reduceat(body, starts).tolist()
            if starts[0] == 0 and not (len(commas) and commas[0] == 0):
                deepest = max(deepest, maxima.pop(0))
            for comma, piece_max in zip(commas.tolist(), maxima):
                spans.append((start, lo + comma, deepest - base))
                start, deepest = lo + comma + 1, piece_max
        else:
            deepest = max(deepest, int(body.max()))
        if len(closed):
            end = lo + stop
            if raw[end] != (ord("]") if array else ord("}")):
                raise ValueError(f"the body's brackets do not match (char {end})")
            if raw[end + 1:].strip():
                raise ValueError(f"unexpected data after the end of the body (char {end + 1})")
            spans.append((start, end, deepest - base) if array else (first, end + 1, deepest))
            break
        depth, backslashes, in_string = int(level[-1]), int(run[-1]), int(inside[-1])
    else:
        raise ValueError("body ends before its brackets close (truncated?)")
    if array and len(spans) == 1 and not raw[spans[0][0]:spans[0][1]].strip():
        return []  # an empty array
    for s, e, _ in spans:
        if not raw[s:e].strip():
            raise ValueError(f"an empty element (char {s})")
    return spans


def rows_one_by_one(raw: bytes, max_rows: int) -> list:
    """The rows of a body one of which nests too deeply to parse the body whole: each element is
    parsed on its own, and one that cannot be becomes a rejected row (too deep, or not valid JSON)."""
    return [parse_row(raw[s:e].decode("utf-8").strip(), depth, "row")
            for s, e, depth in _top_level_spans(raw, max_rows)]


def parse_row(text: str, depth: int | None = None, what: str = "line"):
    """One row's text as a row, or as Unparseable with the reason (``depth`` when already known)."""
    if depth is not None and depth > MAX_DEPTH:
        return Unparseable(text, TOO_DEEP)
    try:
        row = loads(text)
    except TooDeep:
        return Unparseable(text, TOO_DEEP)
    except ValueError as exc:
        return Unparseable(text, f"{what} is not valid JSON: {exc}")
    if depth is None and too_deep(row):
        return Unparseable(text, TOO_DEEP)
    return row


def _encodable(row):
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
        return row
    except UnicodeEncodeError:
        return Unparseable(json.dumps(row), "contains a lone UTF-16 surrogate escape, which is not valid Unicode")
