"""HTTP liveness probe for a worker that serves no port.

Runs in the worker's PID namespace (`docker run --pid container:<worker>`) and answers
200 on any path while a process whose command line contains the given text is alive,
503 otherwise. The managed instance group's autohealing asks it, so an instance whose
Docker daemon or worker is wedged is recreated.

    python process_probe.py 8081 services.transcoder
"""

import http.server
import os
import sys


def worker_alive(marker: bytes) -> bool:
    own_pid = str(os.getpid())
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or pid == own_pid:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if marker in cmdline.read():
                    return True
        except OSError:  # the process ended while we looked
            continue
    return False


def serve(port: int, marker: bytes) -> None:
    class Probe(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            status = 200 if worker_alive(marker) else 503
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # one line every 10 s per checker would drown the worker's logs

    http.server.ThreadingHTTPServer(("0.0.0.0", port), Probe).serve_forever()


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2].encode())
