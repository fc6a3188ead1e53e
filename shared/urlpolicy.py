"""Which source URLs may be fetched: pure syntax and address rules, no I/O.

Two callers apply the same rules at two moments:

- the api, when a task is submitted (:func:`check_source_url`): scheme, shape, and a
  host written as a literal address, so an obviously hostile URL is refused with 422
  before anything is queued;
- the transcoder's fetcher, after it resolves the host and on every redirect
  (:func:`check_address` on each resolved address), so a name that resolves to a
  private address, or a redirect to one, is refused too.

Only globally routable unicast addresses are allowed. Loopback is allowed only when the
local stack's ``allow_loopback_sources`` setting says so; private, link-local (which
holds the cloud metadata service), multicast, reserved and unspecified addresses are
refused whatever the setting.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.errors import Unprocessable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOWED_SCHEMES = frozenset({"http", "https"})
DEFAULT_MAX_URL_LENGTH = 2048

# Names that reach the machine itself or the metadata service without any DNS lookup
# a public resolver would answer; refused at submit so the client learns at once.
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_METADATA_NAMES = frozenset({"metadata", "metadata.google.internal", "metadata.goog"})
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
# A DNS host name: labels of letters, digits, hyphens (not at either end) and, as some
# real hosts use them, underscores; 63 octets a label, 253 the name (RFC 1035, 1123).
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_MAX_NAME_OCTETS = 253
# IPv6 ranges that carry an IPv4 address inside: the embedded address is what is reached.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


class SourceUrlRejected(Unprocessable):
    """A source URL the platform will not fetch; the message says why."""

    code = "source_url_rejected"


@dataclass(frozen=True)
class SourceUrl:
    """A source URL that passed the syntax rules."""

    url: str
    scheme: str
    host: str  # lower-case, without brackets
    port: int
    address: IPAddress | None  # set when the host is written as an address


def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` denotes when it is written as one, else None.

    Besides the dotted quad this accepts every form the C resolver does without asking
    DNS (``127.1``, ``0x7f.0.0.1``, ``2130706433``, ``0177.0.0.1``), since that is how
    the fetcher's resolver will read it.
    """
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefxABCDEFX." for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64 or address in _NAT64_LOCAL:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    # IPv4-compatible (deprecated ::a.b.c.d); ::/96 minus :: and ::1
    if int(address) >> 32 == 0 and int(address) > 1:
        return ipaddress.IPv4Address(int(address))
    return None


def address_refusal(address: IPAddress, *, allow_loopback: bool = False) -> str | None:
    """Why ``address`` may not be fetched from, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            address = ipaddress.IPv6Address(str(address).split("%", 1)[0])
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return address_refusal(embedded, allow_loopback=allow_loopback)
    if address in _METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_loopback:
        return None if allow_loopback else "a loopback address"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if address.is_reserved or not address.is_global:
        return "a reserved address"
    return None


def check_address(address: IPAddress | str, *, allow_loopback: bool = False) -> None:
    """Raise :class:`SourceUrlRejected` unless ``address`` may be fetched from.

    The message names the kind of address, never the address itself (the way a spelling
    such as ``0xa.1`` was read says which internal address it reaches)."""
    if isinstance(address, str):
        address = ipaddress.ip_address(address)
    reason = address_refusal(address, allow_loopback=allow_loopback)
    if reason is not None:
        raise SourceUrlRejected(f"source URL points at {reason}")


def check_source_url(
    url: str, *, allow_loopback: bool = False, max_length: int = DEFAULT_MAX_URL_LENGTH
) -> SourceUrl:
    """Parse ``url`` and apply every rule that needs no DNS; raise
    :class:`SourceUrlRejected` (422) with the reason, else return the parsed URL."""
    if not isinstance(url, str) or not url:
        raise SourceUrlRejected("source URL is empty")
    if len(url) > max_length:
        raise SourceUrlRejected(f"source URL is longer than {max_length} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise SourceUrlRejected("source URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
    except ValueError:
        # Unbalanced or invalid brackets ("http://[::1/"): the parser itself refuses.
        raise SourceUrlRejected("source URL is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise SourceUrlRejected("source URL must use http or https")
    if parts.username is not None or parts.password is not None:
        raise SourceUrlRejected("source URL must not carry credentials")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise SourceUrlRejected("source URL has no host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise SourceUrlRejected("source URL has an invalid port") from None
    if port == 0:
        raise SourceUrlRejected("source URL has an invalid port")

    # A name in another script is judged by its IDNA form, the one the fetcher's HTTP
    # client looks up: full-width digits or "127。0。0。1" are an address there.
    host = _ascii_host(host)
    address = literal_address(host)
    if address is not None:
        check_address(address, allow_loopback=allow_loopback)
    elif not _is_host_name(host):
        raise SourceUrlRejected("source URL has an invalid host name")
    elif host in _METADATA_NAMES:
        raise SourceUrlRejected("source URL points at the cloud metadata service")
    elif (host in _LOCAL_NAMES or host.endswith(".localhost")) and not allow_loopback:
        raise SourceUrlRejected("source URL points at this machine")
    return SourceUrl(url=url, scheme=scheme, host=host, port=port, address=address)


def _ascii_host(host: str) -> str:
    """``host`` in ASCII: IDNA-encoded (Python's IDNA 2003 codec, which folds full-width
    and circled digits and the ideographic full stop) when it is not already."""
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii").lower().rstrip(".")
    except UnicodeError:
        raise SourceUrlRejected("source URL has an invalid host name") from None


def _is_host_name(host: str) -> bool:
    """Whether ``host`` (ASCII, lower-case, not an address) is a name DNS can be asked for."""
    return len(host) <= _MAX_NAME_OCTETS and all(_LABEL.fullmatch(label) for label in host.split("."))
