"""Topic pools for drift tests and benchmarks: many distinct support questions per topic.

Each topic combines a few templates with slot values, so a pool holds
hundreds of different sentences; a seed draws a sample from it.
"""
from __future__ import annotations

import random

_SLOTS = {
    "item": ("headphones", "running shoes", "coffee grinder", "desk lamp", "backpack", "phone case", "blender",
             "winter jacket", "keyboard", "water bottle", "smart watch", "yoga mat"),
    "n": ("2", "3", "5", "7", "10", "12", "14"),
    "plan": ("Basic", "Plus", "Pro", "Team", "Business", "Enterprise"),
    "country": ("Canada", "Germany", "Japan", "Brazil", "Australia", "Norway", "Mexico", "India"),
    "device": ("iPhone", "Android phone", "iPad", "laptop", "work computer", "tablet"),
    "coin": ("USDC", "Bitcoin", "Ether", "Solana", "USDT"),
    "network": ("Polygon", "Arbitrum", "Base", "Optimism", "Tron"),
}

TOPICS: dict[str, tuple[str, ...]] = {
    "billing": (
        "Why was I charged twice for my {plan} subscription this month?",
        "Where can I download last month's invoice for the {plan} plan?",
        "Can I switch my {plan} plan from monthly to yearly billing?",
        "My card was declined when the {plan} plan renewed, what should I do?",
        "How do I add a VAT number to my invoices?",
        "Why did the price of the {plan} plan go up?",
        "Can I pay for {n} seats with a bank transfer instead of a card?",
    ),
    "shipping": (
        "Where is my {item}? It was supposed to arrive {n} days ago.",
        "Do you ship {item} orders to {country}?",
        "Can I change the delivery address for my {item} order?",
        "The tracking number for my {item} hasn't updated in {n} days.",
        "How long does express delivery to {country} take?",
        "My {item} was delivered to the wrong address.",
        "Can I pick up my {item} from a parcel locker?",
    ),
    "returns": (
        "How do I return the {item} I bought {n} days ago?",
        "I still haven't received the refund for my {item}.",
        "My {item} arrived damaged, can I get a replacement?",
        "Do I have to pay for the return shipping of a {item}?",
        "Can I exchange my {item} for a different size or colour?",
        "The {item} I received is not the one I ordered.",
    ),
    "account": (
        "I forgot my password and the reset email never arrives.",
        "How do I turn on two-factor authentication on my {device}?",
        "My account got locked after too many login attempts on my {device}.",
        "How can I change the email address on my account?",
        "How do I delete my account and all my personal data?",
        "I can't sign in on my {device} since the last update.",
        "Can I share my {plan} account with {n} colleagues?",
    ),
}

# A topic none of the above covers: the kind of shift a new product launch brings.
NEW_TOPIC: tuple[str, ...] = (
    "How do I connect my crypto wallet to receive {coin} payouts?",
    "My {coin} payout on {network} hasn't arrived after {n} days.",
    "Which networks do you support for {coin} withdrawals? Is {network} ok?",
    "What are the gas fees when you send {coin} to my wallet on {network}?",
    "Can I get paid in {coin} instead of a bank transfer?",
    "Why was my {coin} withdrawal to {network} rejected?",
    "Is staking {coin} available in the app?",
)


def _fill(template: str, rng: random.Random) -> str:
    return template.format(**{k: rng.choice(v) for k, v in _SLOTS.items()})


def sample(n: int, seed: int, new_share: float = 0.0) -> list[str]:
    """``n`` questions: a share ``new_share`` from NEW_TOPIC, the rest from the usual topics."""
    rng = random.Random(seed)
    topics = list(TOPICS.values())
    out = []
    for _ in range(n):
        pool = NEW_TOPIC if rng.random() < new_share else rng.choice(topics)
        out.append(_fill(rng.choice(pool), rng))
    return out
