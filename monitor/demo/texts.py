"""The demo's text pools and traffic tables, read once from ``texts.json`` next to this module.

They are data rather than code because they are most of the demo's bulk and
change for other reasons (wording, a new tenant) than the generator does.

A few values are drawn rather than picked from a list (an order number, a
wallet address, the digits of a phone number). The JSON describes those with a
*draw spec* and :func:`draw` makes exactly the random calls the generator made
when they were lambdas, in the same order, so a seed still yields the same
events byte for byte:

* a list: ``rng.choice(list)``;
* ``{"pool": NAME}``: ``rng.choice`` from the top-level ``pools[NAME]``;
* ``{"randint": [LO, HI], "format": F}``: ``F.format(rng.randint(LO, HI))``, F defaults to ``"{}"``;
* ``{"getrandbits": K, "count": N, "format": F}``: F formatted with N draws of
  ``rng.getrandbits(K)``, taken left to right.
"""
from __future__ import annotations

import json
import random
from importlib import resources


def _read() -> dict:
    # importlib.resources rather than a path, so it also works from a zip or wheel install
    return json.loads(resources.files(__package__).joinpath("texts.json").read_text(encoding="utf-8"))


DATA: dict = _read()
_POOLS: dict[str, list[str]] = DATA["pools"]
SLOTS: dict[str, list | dict] = DATA["slots"]


def draw(rng: random.Random, spec: list | dict) -> str:
    """One value for a draw spec (see the module docstring)."""
    if isinstance(spec, list):
        return rng.choice(spec)
    if "pool" in spec:
        return rng.choice(_POOLS[spec["pool"]])
    if "randint" in spec:
        lo, hi = spec["randint"]
        return spec.get("format", "{}").format(rng.randint(lo, hi))
    if "getrandbits" in spec:
        bits = [rng.getrandbits(spec["getrandbits"]) for _ in range(spec.get("count", 1))]
        return spec.get("format", "{}").format(*bits)
    raise ValueError(f"texts.json: unknown draw spec {spec!r}")


class Slots(dict):
    """Template slots drawn on first use, so a question and its answer name the same order or product.

    ``str.format_map`` looks slots up left to right, so a template draws its
    slots in the order they appear in it.
    """

    def __init__(self, rng: random.Random, specs: dict | None = None):
        super().__init__()
        self.rng = rng
        self.specs = SLOTS if specs is None else specs

    def __missing__(self, key: str) -> str:
        value = self[key] = draw(self.rng, self.specs[key])
        return value


# topic -> {"questions": [[question, answer], ...], "passages": [...]} for the support bot
SUPPORT: dict[str, dict[str, list]] = DATA["support"]
TOPICS = tuple(SUPPORT)
KB = {topic: tuple(f"[kb:{topic}-{i + 1}] {p}" for i, p in enumerate(t["passages"])) for topic, t in SUPPORT.items()}
ALL_PASSAGES = tuple(p for ps in KB.values() for p in ps)
NEW_TOPIC: list[list[str]] = DATA["new_topic"]["questions"]
NEW_TOPIC_PASSAGE: str = DATA["new_topic"]["passage"]
HALLUCINATED: list[str] = DATA["hallucinated"]
LOCALIZED: dict[str, list[list[str]]] = DATA["localized"]  # language -> [question, answer, topic]

TICKET_ISSUES: list[list[str]] = DATA["tickets"]["issues"]  # [what the customer wrote, how the summary puts it]
TICKET_AGENT: list[list[str]] = DATA["tickets"]["agent"]  # [agent line, how the summary puts it]
TICKET_OUTCOME: list[list[str]] = DATA["tickets"]["outcome"]  # [customer follow-up, ticket status]
SEARCHES: list[list[str]] = DATA["searches"]  # [what the user typed, the rewritten query]
EMAIL_ASKS: list[str] = DATA["email"]["asks"]
EMAIL_DRAFTS: list[str] = DATA["email"]["drafts"]
EMAIL_V8_PADDING: str = DATA["email"]["v8_padding"]
LANGUAGE_NAMES: dict[str, str] = DATA["language_names"]
TRANSLATIONS: list[tuple[str, dict[str, str]]] = [(t["source"], t["translated"]) for t in DATA["translations"]]

INJECTIONS: list[str] = DATA["injections"]
ABUSE: list[str] = DATA["abuse"]
REFUSAL: str = DATA["refusal"]
DEESCALATE: str = DATA["deescalate"]
PII_SENTENCES: list[str] = DATA["pii"]["sentences"]
PII_SLOTS: dict[str, list | dict] = DATA["pii"]["slots"]
COMMENTS_UP: list[str] = DATA["comments"]["up"]
COMMENTS_DOWN: dict[str, list[str]] = DATA["comments"]["down"]  # by the likeliest complaint


def pii(rng: random.Random) -> str:
    """A sentence with contact or card details (reserved ranges only), for server-side redaction to find."""
    return rng.choice(PII_SENTENCES).format_map(Slots(rng, PII_SLOTS))
