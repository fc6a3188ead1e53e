"""The login limit's decision, without a database (docs/api.md, "Login limits")."""

import pytest

from services.auth.throttle import AttemptCounts, client_of, refusal

LIMIT = 20


@pytest.mark.parametrize(
    "client, account, client_on_account, refused",
    [
        (1, 1, 1, None),
        (20, 20, 20, None),  # the limit itself is still checked
        (21, 1, 1, "address"),  # the client's limit, on any accounts
        (21, 500, 5, "address"),  # the client's limit comes first
        (1, 21, 1, None),  # an account past its limit: a first try is checked (the owner)
        (1, 500, 1, None),
        (2, 21, 2, "account"),  # a client that already tried the account is refused
        (5, 21, 2, "account"),
        (5, 20, 5, None),  # within the account's limit a client may try again
    ],
)
def test_who_is_refused_unchecked(client, account, client_on_account, refused):
    reason = refusal(AttemptCounts(client, account, client_on_account), LIMIT)
    if refused is None:
        assert reason is None
    else:
        assert reason is not None and f"this {refused}" in reason


@pytest.mark.parametrize(
    "address, client",
    [
        ("192.0.2.1", "192.0.2.1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2::5", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::5", "2001:db8:1:3::/64"),
        (None, "unknown"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_a_client_is_an_ipv4_address_or_an_ipv6_64(address, client):
    assert client_of(address) == client
