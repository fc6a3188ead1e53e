"""The nginx gateway of the local stack: its configuration, rendered from
nginx.conf.template, and its process."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from infra.local.process import ManagedProcess, StartupError, port_bindable, tcp_probe
from infra.local.stack_config import StackConfig

# The web app's Content-Security-Policy: this origin only, no inline script or style, no
# framing. infra/terraform/web.tf sends the same policy from the backend bucket.
WEB_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "media-src 'self' blob:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


def web_root(config: StackConfig) -> Path:
    """Where the gateway serves the web app from: the build of web/ (`make web`)."""
    return config.project_root / "web" / "dist"


def _mime_types() -> Path:
    for candidate in (Path("/etc/nginx/mime.types"), Path("/usr/local/nginx/conf/mime.types")):
        if candidate.exists():
            return candidate
    raise StartupError("nginx's mime.types not found: run `make install`")


def render_gateway_config(config: StackConfig) -> Path:
    nginx_dir = config.state_dir / "nginx"
    nginx_dir.mkdir(parents=True, exist_ok=True)
    listen = [f"listen {config.host}:{config.gateway_port};"]
    if config.host == "127.0.0.1" and port_bindable("::1", config.gateway_port):
        # `localhost` resolves to ::1 first on most systems.
        listen.append(f"listen [::1]:{config.gateway_port};")
    # Workers run as the launching user: they write temp files under the state
    # folder, which may sit in a home no other user can enter.
    user_directive = "user root root;" if os.geteuid() == 0 else ""
    values = {
        "nginx_dir": str(nginx_dir),
        "user_directive": user_directive,
        "host": config.host,
        "auth_port": str(config.auth_port),
        "api_port": str(config.api_port),
        "listen_directives": "\n        ".join(listen),
        "web_root": str(web_root(config)),
        "web_csp": WEB_CSP,
        "mime_types": str(_mime_types()),
    }
    text = (Path(__file__).parent / "nginx.conf.template").read_text()
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", value)
    if "{{" in text:
        raise StartupError("nginx.conf.template has a field the launcher does not fill")
    path = nginx_dir / "nginx.conf"
    path.write_text(text)
    return path


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise StartupError("nginx not found: run `make install`")
    return found


def start_gateway(config: StackConfig) -> ManagedProcess:
    """nginx in front of auth and api on ``config.gateway_port``, started and accepting."""
    conf = render_gateway_config(config)
    process = ManagedProcess(
        "gateway",
        [nginx_binary(), "-p", conf.parent, "-e", "stderr", "-c", conf],
        log_path=config.logs_dir / "gateway.log",
        cwd=config.project_root,
    ).start()
    try:
        process.wait_ready(tcp_probe(config.host, config.gateway_port), timeout=30)
    except BaseException:
        process.stop()
        raise
    return process
