"""A slow-loris upload: send the head of a multipart POST /tasks, then one byte every
``--gap`` seconds for ``--seconds``, and report whether and when the gateway cut it.

Not a test (it measures, it asserts nothing): the figures go to docs/security.md.

    python tests/security/slow_client.py --gap 20 --seconds 150 http://127.0.0.1:5050 "$TOKEN"
"""

from __future__ import annotations

import argparse
import socket
import time
from urllib.parse import urlsplit


def trickle(base_url: str, token: str, gap: float, seconds: float) -> str:
    parts = urlsplit(base_url)
    sock = socket.create_connection((parts.hostname, parts.port or 80))
    head = (
        f"POST /tasks HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 10000000\r\n\r\n"
        '--b\r\nContent-Disposition: form-data; name="file"; filename="run.mp4"\r\n\r\n'
    ).encode() + b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
    started = time.monotonic()
    sock.sendall(head)
    sock.settimeout(gap)
    try:
        while time.monotonic() - started < seconds:
            try:
                if sock.recv(65536) == b"":
                    return f"cut by the server after {time.monotonic() - started:.1f} s"
            except TimeoutError:
                pass
            try:
                sock.sendall(b"x")
            except OSError as exc:
                return f"cut by the server after {time.monotonic() - started:.1f} s ({exc})"
        return f"still open after {time.monotonic() - started:.1f} s of one byte every {gap:.0f} s"
    finally:
        sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url")
    parser.add_argument("token")
    parser.add_argument("--gap", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=150.0)
    args = parser.parse_args()
    print(trickle(args.base_url, args.token, args.gap, args.seconds))


if __name__ == "__main__":
    main()
