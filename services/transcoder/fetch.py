"""Bring a task's source to local disk: an http(s) URL or an upload in the uploads bucket.

URL sources are fetched under the platform's URL policy (:mod:`shared.urlpolicy`) at
every step: the URL's syntax before each request (the first one and every redirect),
and each address the host resolves to before connecting. The connection is then made
to the address that was checked, never to a fresh lookup, so a name cannot resolve to
a public address for the check and a private one for the connection (DNS rebinding).
Redirects are followed by hand, a bounded number of times; the body streams to disk
under a byte limit as well as connect/read timeouts.

A read timeout bounds the gap between two reads, not the download: a server that sends
a byte every few seconds, in the headers or the body, never trips it. So every fetch has
a watchdog thread that ends it from outside the read, by shutting its sockets down, when
the wall-clock limit passes, when the source sends slower than the least average rate
once a grace period is over, or when the task's stop signal is set (a cancel, a drain).
The blocked read then returns or fails at once, and the fetch raises the watchdog's
reason rather than the broken read's.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import requests
from google.api_core import exceptions as gexc
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY
from urllib3 import exceptions as urllib3_exceptions

from services.transcoder.errors import PermanentFailure, ProcessingStopped, TransientFailure
from services.transcoder.runner import StopSignal
from shared import pinned
from shared.pinned import PinnedAdapter
from shared.storage import parse_gs_uri
from shared.urlpolicy import SourceUrlRejected, address_refusal, check_source_url

log = logging.getLogger(__name__)

Resolver = pinned.Resolver

_CHUNK_BYTES = 1024 * 1024
# How often the watchdog looks: a stop or a limit ends the fetch within about this long.
_WATCH_SECONDS = 0.2
_USER_AGENT = "idrl-transcoder/1"
_TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, through the system resolver, a failure told
    apart as transient (no answer now) or permanent (no such host)."""
    try:
        return pinned.system_resolver(host, port)
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_AGAIN,):
            raise TransientFailure(f"the source host {host} could not be resolved now") from None
        raise PermanentFailure(f"the source host {host} does not exist") from None
    except UnicodeError:
        # An empty or over-long label ("a..b"): the name cannot even be asked for.
        raise PermanentFailure(f"the source host {host} is not a valid host name") from None


def _unreachable_source(host: str, error: OSError | None) -> Exception:
    return TransientFailure(f"could not connect to the source host {host} ({error})")


@dataclass(frozen=True)
class FetchPolicy:
    allow_loopback: bool
    max_bytes: int
    connect_timeout: float
    read_timeout: float
    total_timeout: float
    min_bytes_per_second: float  # 0: no floor
    throughput_grace: float
    max_redirects: int


def download_limit_passed(policy: FetchPolicy, *, elapsed: float, received: int) -> str | None:
    """Why a download ``elapsed`` seconds old with ``received`` body bytes must end now,
    or None while it is within the limits."""
    if elapsed > policy.total_timeout:
        return f"the source did not download within {policy.total_timeout:.0f} s"
    floor = policy.min_bytes_per_second
    # The average since the fetch began (connecting and redirects included), judged only
    # after the grace period, so a slow start is not held against a source.
    if floor > 0 and elapsed >= policy.throughput_grace and received < floor * elapsed:
        return (
            f"the source sends too slowly ({received} bytes in {elapsed:.0f} s; "
            f"it must average at least {floor:.0f} bytes/s)"
        )
    return None


class _Watchdog:
    """Ends one fetch from outside its reads: shuts down every socket the fetch opened
    once a limit passes or the stop signal is set, and keeps the reason."""

    def __init__(self, policy: FetchPolicy, stop: StopSignal | None) -> None:
        self.policy = policy
        self.stop = stop
        self.received = 0  # body bytes so far, written by the fetching thread
        self._verdict: Exception | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._watch, name="fetch-watchdog", daemon=True)

    def __enter__(self) -> _Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._done.set()
        self._thread.join()

    def watch(self, sock: socket.socket) -> None:
        """Take ``sock`` under watch; shut it down at once if the fetch is already over."""
        with self._lock:
            self._sockets.append(sock)
            over = self._verdict is not None
        if over:
            _shut_down(sock)

    def raise_if_ended(self) -> None:
        """Raise the reason the watchdog ended the fetch, if it did."""
        if self._verdict is not None:
            raise self._verdict from None

    def _watch(self) -> None:
        while not self._done.wait(_WATCH_SECONDS):
            verdict = self._judge()
            if verdict is not None:
                with self._lock:
                    self._verdict = verdict
                    sockets = list(self._sockets)
                for sock in sockets:
                    _shut_down(sock)
                return

    def _judge(self) -> Exception | None:
        if self.stop is not None and self.stop.is_set():
            return ProcessingStopped(self.stop.why or "stopped")
        elapsed = time.monotonic() - self._started
        reason = download_limit_passed(self.policy, elapsed=elapsed, received=self.received)
        return PermanentFailure(reason) if reason is not None else None


def _shut_down(sock: socket.socket) -> None:
    # The plain socket's shutdown, under TLS too: it wakes a read blocked in another
    # thread, where the TLS socket's own would drop the TLS state under that read. A
    # socket closed already has nothing left to shut.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Guard:
    """Resolves a host, refuses it unless every address passes the policy, says which
    addresses to connect to, and puts each connection under the fetch's watchdog."""

    def __init__(self, resolver: Resolver, allow_loopback: bool, watchdog: _Watchdog) -> None:
        self.resolver = resolver
        self.allow_loopback = allow_loopback
        self.watchdog = watchdog

    def addresses(self, host: str, port: int) -> list[str]:
        self.watchdog.raise_if_ended()
        addresses = self.resolver(host, port)
        if not addresses:
            raise PermanentFailure(f"the source host {host} does not exist")
        for address in addresses:
            # One refused address refuses the host: a name that mixes public and
            # private answers is an attempt to pass the check with one and use the other.
            refusal = address_refusal(ipaddress.ip_address(address), allow_loopback=self.allow_loopback)
            if refusal is not None:
                # The owner learns the kind of address only, never which one: that
                # would map the network behind the worker. The operator's log names it.
                log.warning("refused the source host %s: it resolves to %s (%s)", host, address, refusal)
                raise PermanentFailure(f"the source host resolves to {refusal}, which is not allowed")
        return addresses


class UrlFetcher:
    """Fetches http(s) sources to local files under a :class:`FetchPolicy`.

    Each fetch opens its own connections and closes them when it ends (no pool is kept
    between fetches), so its watchdog knows every socket the fetch reads from.
    """

    def __init__(self, policy: FetchPolicy, resolver: Resolver = system_resolver) -> None:
        self.policy = policy
        self.resolver = resolver

    def close(self) -> None:
        """Nothing to release: no connection outlives its fetch."""

    def fetch(self, url: str, destination: Path, *, stop: StopSignal | None = None) -> int:
        """Stream ``url`` into ``destination``; returns the number of bytes written.

        Raises :class:`ProcessingStopped` within about a second once ``stop`` is set,
        :class:`PermanentFailure` when the download passes the total timeout or sends
        slower than the least average rate, besides the failures of each request.
        """
        with _Watchdog(self.policy, stop) as watchdog, self._session(watchdog) as session:
            try:
                written = self._follow(session, url, destination, watchdog)
            except Exception:
                # A read the watchdog cut fails as a broken connection: its reason is the one.
                watchdog.raise_if_ended()
                raise
            # A body without a declared length ends like a cut one: check the reason too.
            watchdog.raise_if_ended()
            return written

    def _session(self, watchdog: _Watchdog) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # a proxy from the environment would bypass the check
        guard = _Guard(self.resolver, self.policy.allow_loopback, watchdog)
        adapter = PinnedAdapter(guard.addresses, on_connect=watchdog.watch, unreachable=_unreachable_source)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def _follow(self, session: requests.Session, url: str, destination: Path, watchdog: _Watchdog) -> int:
        current = url
        for _ in range(self.policy.max_redirects + 1):
            try:
                check_source_url(current, allow_loopback=self.policy.allow_loopback)
            except SourceUrlRejected as exc:
                raise PermanentFailure(exc.message) from None
            response = self._get(session, current)
            with response:
                if response.is_redirect:
                    location = response.headers.get("Location", "")
                    current = urljoin(current, location)
                    continue
                self._check_status(response)
                return self._stream(response, destination, watchdog)
        raise PermanentFailure(f"the source redirected more than {self.policy.max_redirects} times")

    def _get(self, session: requests.Session, url: str) -> requests.Response:
        try:
            return session.get(
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

    def _stream(self, response: requests.Response, destination: Path, watchdog: _Watchdog) -> int:
        written = 0
        try:
            with destination.open("wb") as out:
                # read1: whatever one read brings, so the watchdog counts bytes as they
                # come, not once a whole chunk is in.
                while chunk := response.raw.read1(_CHUNK_BYTES, decode_content=True):
                    written += len(chunk)
                    watchdog.received = written
                    if written > self.policy.max_bytes:
                        raise PermanentFailure(f"the source is over the {self.policy.max_bytes} bytes limit")
                    out.write(chunk)
        except urllib3_exceptions.HTTPError as exc:
            # A read timeout, a connection closed before the declared end, a broken chunk.
            raise TransientFailure(f"the source download broke off ({_short(exc)})") from None
        return written


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def fetch_upload(
    client: storage.Client,
    uri: str,
    destination: Path,
    *,
    bucket: str,
    max_bytes: int,
    what: str = "uploaded source",
    client_retry: bool = True,
) -> int:
    """Stream an object of ``bucket`` to ``destination``: an uploaded source
    (``gs://<uploads bucket>/...``), or a part's segment (``what`` names it in reasons).
    Without ``client_retry`` the client library does not retry on its own: the caller's
    retries (which a cancellation interrupts) are the only ones."""
    retry = DEFAULT_RETRY if client_retry else None
    try:
        source_bucket, name = parse_gs_uri(uri)
    except ValueError as exc:
        raise PermanentFailure(str(exc)) from None
    if source_bucket != bucket:
        raise PermanentFailure(f"the {what} must be in the platform's own bucket")
    blob = client.bucket(bucket).blob(name)
    try:
        blob.reload(retry=retry)
        if blob.size is not None and blob.size > max_bytes:
            raise PermanentFailure(f"the {what} is {blob.size} bytes, over the {max_bytes} bytes limit")
        blob.download_to_filename(str(destination), retry=retry)
    except gexc.NotFound:
        raise PermanentFailure(f"the {what} no longer exists") from None
    except gexc.Forbidden:
        raise PermanentFailure(f"the {what} cannot be read") from None
    except (
        gexc.ServerError,
        gexc.TooManyRequests,
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
    ) as exc:
        raise TransientFailure(f"the {what} could not be read now ({_short(exc)})") from None
    return destination.stat().st_size
