"""How many password checks a client and an account get (docs/api.md, "Login limits").

Every attempt to prove a password (a login, a password change) is counted before the
password is checked, in one statement, on three counters of the current minute: the
client's address, the account (its user id however it was named; what was typed, for a
name no account has), and that address on that account. The counts decide whether the
password is checked at all; a right password then takes its attempt back, so what stays
counted is failures (and attempts still under way).

Checked in this order, each count including the attempt itself:

1. past the limit from this address (on any accounts): 429;
2. past the limit on this account (from any addresses) and this address has already
   tried this account in this minute: 429;
3. otherwise the password is checked: 200, or 401 for a wrong one.

So a guesser is slowed on both counts, and an address that has not tried the account
in this minute, such as its owner's, always has its password checked.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from shared import ratelimit
from shared.errors import RateLimited


@dataclass(frozen=True)
class AttemptCounts:
    """Password attempts in the current minute, the one being decided included."""

    client: int
    account: int
    client_on_account: int


def refusal(counts: AttemptCounts, limit: int) -> str | None:
    """Why an attempt with these counts is refused without checking its password, or
    ``None`` when its password is to be checked."""
    if counts.client > limit:
        return "too many failed logins from this address, try again later"
    if counts.account > limit and counts.client_on_account > 1:
        return "too many failed logins for this account from this address, try again later"
    return None


def client_of(address: str | None) -> str:
    """The client an address stands for: itself for IPv4, its /64 for IPv6 (one host
    commonly holds a whole /64, so single IPv6 addresses would be free to change)."""
    try:
        parsed = ipaddress.ip_address(address or "")
    except ValueError:
        return address or "unknown"
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


def begin(engine: Engine, *, account: str, address: str | None, limit: int) -> ratelimit.Counted:
    """Count a password attempt on ``account`` from ``address``; raise
    :class:`RateLimited` (429, the password not checked) when the policy refuses it."""
    client = client_of(address)
    keys = {
        "client": f"login:client:{client}",
        "account": f"login:account:{account}",
        "client_on_account": f"login:account:{account}:client:{client}",
    }
    counted = ratelimit.count(engine, keys.values())
    reason = refusal(AttemptCounts(**{name: counted.hits[key] for name, key in keys.items()}), limit)
    if reason:
        raise RateLimited(reason, retry_after=counted.retry_after)
    return counted


def succeeded(engine: Engine, attempt: ratelimit.Counted) -> None:
    """The password was right: the attempt is not a failure, take it back."""
    ratelimit.uncount(engine, attempt)
