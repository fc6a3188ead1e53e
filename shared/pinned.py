"""HTTP connections made only to addresses that were checked: a requests adapter whose
connections resolve the host themselves, ask a guard which addresses may be used, and
connect to one of those, never to a fresh lookup (so a name cannot answer a public
address for the check and a private one for the connection: DNS rebinding). TLS still
verifies the certificate against the host name.

The transcoder fetches URL sources and the dispatcher sends webhooks through it; the
guard decides what a refusal raises.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util import connection as urllib3_connection

Resolver = Callable[[str, int], list[str]]
"""Every address a host resolves to (strings), for a port."""

AddressGuard = Callable[[str, int], list[str]]
"""The addresses a host may be reached at: resolves, checks, raises to refuse."""


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, through the system resolver (``OSError`` when
    it cannot be resolved)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


if TYPE_CHECKING:
    _Connection = HTTPConnection
else:
    _Connection = object


ConnectHook = Callable[[socket.socket], None]
"""Called with each socket a pinned connection opens (for example to watch it)."""

Unreachable = Callable[[str, OSError | None], Exception]
"""The exception to raise when no allowed address of a host accepted the connection."""


def _unreachable(host: str, error: OSError | None) -> Exception:
    return ConnectionError(f"could not connect to {host}: {error}")


class _PinnedConnectionMixin(_Connection):
    guard: AddressGuard
    on_connect: ConnectHook | None
    unreachable: Unreachable

    def _new_conn(self) -> socket.socket:
        last_error: OSError | None = None
        for address in self.guard(self._dns_host.strip("[]"), self.port):
            try:
                sock = urllib3_connection.create_connection(
                    (address, self.port),
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except OSError as exc:
                last_error = exc
                continue
            if self.on_connect is not None:
                self.on_connect(sock)
            return sock
        raise self.unreachable(self.host, last_error)


class PinnedAdapter(HTTPAdapter):
    """A requests adapter whose every connection goes to an address ``guard`` allowed.

    ``on_connect`` sees each socket opened; ``unreachable`` makes the exception raised
    when none of the allowed addresses accepts a connection.
    """

    def __init__(
        self,
        guard: AddressGuard,
        *,
        on_connect: ConnectHook | None = None,
        unreachable: Unreachable = _unreachable,
    ) -> None:
        self._attrs = {
            "guard": staticmethod(guard),
            "on_connect": staticmethod(on_connect) if on_connect is not None else None,
            "unreachable": staticmethod(unreachable),
        }
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        http = type("PinnedHTTPConnection", (_PinnedConnectionMixin, HTTPConnection), self._attrs)
        https = type("PinnedHTTPSConnection", (_PinnedConnectionMixin, HTTPSConnection), self._attrs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("PinnedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
            "https": type("PinnedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https}),
        }
