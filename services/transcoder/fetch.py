"""Bring a task's source to local disk: an http(s) URL or an upload in the uploads bucket.

URL sources are fetched under the platform's URL policy (:mod:`shared.urlpolicy`) at
every step: the URL's syntax before each request (the first one and every redirect),
and each address the host resolves to before connecting. The connection is then made
to the address that was checked, never to a fresh lookup, so a name cannot resolve to
a public address for the check and a private one for the connection (DNS rebinding).
Redirects are followed by hand, a bounded number of times; the body streams to disk
under a byte limit and an overall deadline as well as connect/read timeouts.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin

import requests
from google.api_core import exceptions as gexc
from google.cloud import storage
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util import connection as urllib3_connection

from services.transcoder.errors import PermanentFailure, TransientFailure
from shared.storage import parse_gs_uri
from shared.urlpolicy import SourceUrlRejected, check_address, check_source_url

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], list[str]]

_CHUNK_BYTES = 1024 * 1024
_USER_AGENT = "idrl-transcoder/1"
_TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, through the system resolver."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_AGAIN,):
            raise TransientFailure(f"the source host {host} could not be resolved now") from None
        raise PermanentFailure(f"the source host {host} does not exist") from None
    except UnicodeError:
        # An empty or over-long label ("a..b"): the name cannot even be asked for.
        raise PermanentFailure(f"the source host {host} is not a valid host name") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class FetchPolicy:
    allow_loopback: bool
    max_bytes: int
    connect_timeout: float
    read_timeout: float
    total_timeout: float
    max_redirects: int


class _Guard:
    """Resolves a host, refuses it unless every address passes the policy, and says
    which addresses to connect to."""

    def __init__(self, resolver: Resolver, allow_loopback: bool) -> None:
        self.resolver = resolver
        self.allow_loopback = allow_loopback

    def addresses(self, host: str, port: int) -> list[str]:
        addresses = self.resolver(host.strip("[]"), port)
        if not addresses:
            raise PermanentFailure(f"the source host {host} does not exist")
        for address in addresses:
            # One refused address refuses the host: a name that mixes public and
            # private answers is an attempt to pass the check with one and use the other.
            check_address(address, allow_loopback=self.allow_loopback)
        return addresses


# The mixin is only ever combined with urllib3's connection classes, whose attributes it uses.
if TYPE_CHECKING:
    _Connection = HTTPConnection
else:
    _Connection = object


class _GuardedConnectionMixin(_Connection):
    guard: _Guard

    def _new_conn(self) -> socket.socket:
        last_error: OSError | None = None
        for address in self.guard.addresses(self._dns_host, self.port):
            try:
                return urllib3_connection.create_connection(
                    (address, self.port),
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except OSError as exc:
                last_error = exc
        raise TransientFailure(f"could not connect to the source host {self.host} ({last_error})")


class _GuardedAdapter(HTTPAdapter):
    """A requests adapter whose connections resolve and check the host themselves; TLS
    still verifies the certificate against the host name."""

    def __init__(self, guard: _Guard) -> None:
        self._guard = guard
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        attrs = {"guard": self._guard}
        http = type("GuardedHTTPConnection", (_GuardedConnectionMixin, HTTPConnection), attrs)
        https = type("GuardedHTTPSConnection", (_GuardedConnectionMixin, HTTPSConnection), attrs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
            "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https}),
        }


class UrlFetcher:
    """Fetches http(s) sources to local files under a :class:`FetchPolicy`."""

    def __init__(self, policy: FetchPolicy, resolver: Resolver = system_resolver) -> None:
        self.policy = policy
        self.session = requests.Session()
        self.session.trust_env = False  # a proxy from the environment would bypass the check
        adapter = _GuardedAdapter(_Guard(resolver, policy.allow_loopback))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def close(self) -> None:
        self.session.close()

    def fetch(self, url: str, destination: Path) -> int:
        """Stream ``url`` into ``destination``; returns the number of bytes written."""
        deadline = time.monotonic() + self.policy.total_timeout
        current = url
        for _ in range(self.policy.max_redirects + 1):
            try:
                check_source_url(current, allow_loopback=self.policy.allow_loopback)
            except SourceUrlRejected as exc:
                raise PermanentFailure(exc.message) from None
            response = self._get(current)
            with response:
                if response.is_redirect:
                    location = response.headers.get("Location", "")
                    current = urljoin(current, location)
                    continue
                self._check_status(response)
                return self._stream(response, destination, deadline)
        raise PermanentFailure(f"the source redirected more than {self.policy.max_redirects} times")

    def _get(self, url: str) -> requests.Response:
        try:
            return self.session.get(
                url,
                stream=True,
                allow_redirects=False,
                timeout=(self.policy.connect_timeout, self.policy.read_timeout),
                headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"},
            )
        except SourceUrlRejected as exc:
            raise PermanentFailure(exc.message) from None
        except ValueError as exc:
            # The HTTP client refuses the URL (InvalidURL: a host that is no valid IDNA
            # name, such as "①②⑦.0.0.1") or a redirect's Location it cannot parse: the
            # URL passed the policy's syntax rules but can never be fetched.
            raise PermanentFailure(f"the source URL cannot be fetched ({_short(exc)})") from None
        except requests.exceptions.SSLError as exc:
            raise PermanentFailure(f"the source's TLS certificate was refused ({_short(exc)})") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise TransientFailure(f"the source could not be reached ({_short(exc)})") from None

    def _check_status(self, response: requests.Response) -> None:
        status = response.status_code
        if status in _TRANSIENT_STATUSES:
            raise TransientFailure(f"the source answered HTTP {status}")
        if not 200 <= status < 300:
            raise PermanentFailure(f"the source answered HTTP {status}")
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.policy.max_bytes:
            raise PermanentFailure(
                f"the source is {int(declared)} bytes, over the {self.policy.max_bytes} bytes limit"
            )

    def _stream(self, response: requests.Response, destination: Path, deadline: float) -> int:
        written = 0
        try:
            with destination.open("wb") as out:
                for chunk in response.iter_content(_CHUNK_BYTES):
                    written += len(chunk)
                    if written > self.policy.max_bytes:
                        raise PermanentFailure(f"the source is over the {self.policy.max_bytes} bytes limit")
                    if time.monotonic() > deadline:
                        raise TransientFailure(
                            f"the source did not download within {self.policy.total_timeout:.0f} s"
                        )
                    out.write(chunk)
        except (
            requests.exceptions.ConnectionError,
            requests.exceptions.Timeout,
            requests.exceptions.ChunkedEncodingError,
        ) as exc:
            raise TransientFailure(f"the source download broke off ({_short(exc)})") from None
        return written


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def fetch_upload(client: storage.Client, uri: str, destination: Path, *, bucket: str, max_bytes: int) -> int:
    """Stream an uploaded source (``gs://<uploads bucket>/...``) to ``destination``."""
    try:
        source_bucket, name = parse_gs_uri(uri)
    except ValueError as exc:
        raise PermanentFailure(str(exc)) from None
    if source_bucket != bucket:
        raise PermanentFailure("the source must be an upload in the uploads bucket")
    blob = client.bucket(bucket).blob(name)
    try:
        blob.reload()
        if blob.size is not None and blob.size > max_bytes:
            raise PermanentFailure(f"the source is {blob.size} bytes, over the {max_bytes} bytes limit")
        blob.download_to_filename(str(destination))
    except gexc.NotFound:
        raise PermanentFailure("the uploaded source no longer exists") from None
    except gexc.Forbidden:
        raise PermanentFailure("the uploaded source cannot be read") from None
    except (
        gexc.ServerError,
        gexc.TooManyRequests,
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
    ) as exc:
        raise TransientFailure(f"the uploaded source could not be read now ({_short(exc)})") from None
    return destination.stat().st_size
