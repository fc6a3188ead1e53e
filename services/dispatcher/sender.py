"""One delivery attempt over HTTP, under the platform's URL policy.

The endpoint URL is checked again before every attempt, its host resolved and each
address checked (``shared.urlpolicy``), and the connection made to a checked address
(``shared.pinned``). Redirects are not followed. At most ``MAX_RESPONSE_BYTES`` of the
answer are read and ``KEPT_RESPONSE_CHARS`` kept for the log. The attempt's wall-clock
limit bounds connecting, each read, and the body as a whole.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass

import requests
from urllib3 import exceptions as urllib3_exceptions

from services.dispatcher.schedule import Attempt
from shared.pinned import PinnedAdapter, Resolver, system_resolver
from shared.urlpolicy import SourceUrlRejected, address_refusal, check_source_url

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 64 * 1024
KEPT_RESPONSE_CHARS = 1024
_USER_AGENT = "idrl-webhooks/1"


class Refused(Exception):
    """The endpoint may not be reached: the policy refuses its URL or an address."""


@dataclass(frozen=True)
class Sent:
    attempt: Attempt
    response: str | None  # the first KiB of the answer's body
    latency_ms: int


class Sender:
    def __init__(
        self,
        *,
        timeout: float,
        allow_loopback: bool,
        https_only: bool,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.timeout = timeout
        self.allow_loopback = allow_loopback
        self.https_only = https_only
        self.resolver = resolver

    def _guard(self, host: str, port: int) -> list[str]:
        try:
            addresses = self.resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise ConnectionError(f"the host {host} could not be resolved ({exc})") from None
        if not addresses:
            raise ConnectionError(f"the host {host} does not resolve")
        for address in addresses:
            refusal = address_refusal(ipaddress.ip_address(address), allow_loopback=self.allow_loopback)
            if refusal is not None:
                log.warning("refused the webhook host %s: it resolves to %s (%s)", host, address, refusal)
                raise Refused(f"the endpoint's host resolves to {refusal}, which is not allowed")
        return addresses

    def send(self, url: str, headers: dict[str, str], body: str) -> Sent:
        started = time.monotonic()
        try:
            parsed = check_source_url(url, allow_loopback=self.allow_loopback)
            if self.https_only and parsed.scheme != "https":
                raise Refused("the endpoint URL must use https")
            return self._post(url, headers, body, started)
        except SourceUrlRejected as exc:
            return self._no_answer(exc.message.replace("source URL", "endpoint URL"), started)
        except Refused as exc:
            return self._no_answer(str(exc), started)

    def _no_answer(self, error: str, started: float) -> Sent:
        return Sent(Attempt(None, error=error), None, _ms_since(started))

    def _post(self, url: str, headers: dict[str, str], body: str, started: float) -> Sent:
        deadline = started + self.timeout
        with requests.Session() as session:
            session.trust_env = False  # a proxy from the environment would bypass the check
            adapter = PinnedAdapter(self._guard)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            try:
                response = session.post(
                    url,
                    data=body.encode(),
                    headers=headers | {"Content-Type": "application/json", "User-Agent": _USER_AGENT},
                    allow_redirects=False,
                    stream=True,
                    timeout=(self.timeout, self.timeout),
                )
            except Refused:
                raise
            except requests.exceptions.Timeout:
                return self._no_answer(f"no answer within {self.timeout:g} s", started)
            except requests.exceptions.RequestException as exc:
                return self._no_answer(f"could not reach the endpoint ({_short(exc)})", started)
            with response:
                kept = self._read(response, deadline)
                if kept is None:
                    return self._no_answer(f"the answer did not arrive within {self.timeout:g} s", started)
                return Sent(
                    Attempt(response.status_code, retry_after=response.headers.get("Retry-After")),
                    kept,
                    _ms_since(started),
                )

    def _read(self, response: requests.Response, deadline: float) -> str | None:
        """The first KiB of at most 64 KiB read, or None past the deadline."""
        received = b""
        try:
            while len(received) < MAX_RESPONSE_BYTES:
                if time.monotonic() > deadline:
                    return None
                chunk = response.raw.read1(MAX_RESPONSE_BYTES - len(received))
                if not chunk:
                    break
                received += chunk
        except (urllib3_exceptions.HTTPError, OSError) as exc:
            # The status line arrived; a body that breaks off does not change what it said.
            log.info("the endpoint's answer broke off: %s", _short(exc))
        return received.decode("utf-8", errors="replace")[:KEPT_RESPONSE_CHARS]


def _ms_since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
