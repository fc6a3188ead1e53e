"""Server-side request forgery: every address form refused at submit (422), and at
fetch time (the transcoder's fetcher) for what only resolution or a redirect reveals,
including a name whose DNS answer changes between the check and the connection."""

from __future__ import annotations

import logging

import pytest

from services.transcoder import fetch as fetch_module
from services.transcoder.errors import PermanentFailure
from services.transcoder.fetch import FetchPolicy, UrlFetcher
from shared import pinned as pinned_module
from shared.tables import tasks
from shared.tokens import issue_token
from tests.support.db import count_rows, insert_user
from tests.support.security import leaks_in, wait_for_outcome

pytestmark = pytest.mark.security

# Refused at submit whatever the stack allows: metadata, link-local, private, the
# unspecified address (which reaches this machine on Linux), other schemes, URLs the
# parser itself cannot read.
FORBIDDEN_EVERYWHERE = [
    # the cloud metadata service, by name and by every spelling of its address
    "http://169.254.169.254/computeMetadata/v1/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA.GOOGLE.INTERNAL./computeMetadata/v1/",
    "http://metadata/computeMetadata/v1/",
    "http://2852039166/",  # decimal
    "http://0251.0376.0251.0376/",  # octal
    "http://0xa9fea9fe/",  # hex
    "http://0xa9.0xfe.0xa9.0xfe/",
    "http://169.254.43518/",  # two-part form
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[fd00:ec2::254]/",
    # IPv6 link-local, with and without a zone
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    "http://[fe80::a9fe:a9fe]/",
    # private ranges, plainly and disguised
    "http://10.0.0.1/",
    "http://167772161/",
    "http://0xa.1/",
    "http://012.0.0.1/",
    "http://192.168.0.1/",
    "http://[::ffff:10.0.0.1]/",
    "http://[64:ff9b::a00:1]/",
    "http://[2002:a00:1::]/",
    "http://100.64.0.1/",
    # the unspecified address: connecting to it reaches this machine
    "http://0/",
    "http://0.0.0.0:5052/tasks",
    "http://[::]/",
    # names in other scripts whose IDNA form is one of the above, and no names at all
    "http://\uff11\uff16\uff19\uff0e\uff12\uff15\uff14\uff0e\uff11\uff16\uff19\uff0e\uff12\uff15\uff14/computeMetadata/v1/",
    "http://169\u3002254\u3002169\u3002254/",
    "http://\u2460\u24ea.0.0.1/",  # circled digits: 10.0.0.1
    "http://a..b/run.mp4",
    "http://" + "a" * 64 + ".example/run.mp4",
    # other schemes
    "gopher://127.0.0.1:6379/_FLUSHALL",
    "gopher://videos.league.example/_x",
    "file:///etc/passwd",
    "FILE:///etc/passwd",
    "dict://127.0.0.1:11211/stats",
    "ftp://videos.league.example/run.mp4",
    "ldap://videos.league.example/",
    "jar:http://videos.league.example/a.jar!/",
    "//videos.league.example/run.mp4",
    # URLs the parser refuses (unbalanced or invalid brackets)
    "http://[::1/",
    "http://[/",
    "http://a]/",
    "http://[1.2.3.4]/",
    # credentials hiding the real host
    "http://videos.league.example@10.0.0.1/",
    "http://videos.league.example\\@10.0.0.1/",
]

# Refused in production only: the local stack allows loopback so its workers can
# fetch from a test server.
LOOPBACK_FORMS = [
    "http://127.0.0.1/",
    "http://127.1/",
    "http://2130706433/",
    "http://017700000001/",
    "http://0177.0.0.1/",
    "http://0x7f.1/",
    "http://0x7f000001/",
    "http://0x7f.0.0.1/",
    "http://127.0.0.1.:80/",
    "http://[::1]/",
    "http://[::1%25lo]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[0:0:0:0:0:ffff:7f00:1]/",
    "http://[2002:7f00:1::]/",
    "http://localhost/",
    "http://LOCALHOST./",
    "http://api.localhost/",
    "http://127.0.0.1#@videos.league.example/",
    "http://\u2460\u2461\u2466.0.0.1/",  # circled digits: 127.0.0.1
]


def _user_token(app, key, settings) -> dict[str, str]:
    user_id = insert_user(app.extensions["engine"])
    return {"Authorization": f"Bearer {issue_token(key, settings, str(user_id))}"}


def test_submit_refuses_every_hostile_form_under_production_rules(production_rules_app, test_key):
    app = production_rules_app
    headers = _user_token(app, test_key, app.extensions["settings"])
    client = app.test_client()
    answers = {
        url: client.post("/tasks", json={"url": url}, headers=headers)
        for url in FORBIDDEN_EVERYWHERE + LOOPBACK_FORMS
    }

    wrong = {
        url: (r.status_code, r.get_json())
        for url, r in answers.items()
        if r.status_code != 422 or r.get_json()["error"]["code"] != "source_url_rejected"
    }
    assert wrong == {}
    leaking = {url: leaks_in(r.get_data(as_text=True)) for url, r in answers.items()}
    assert {url: found for url, found in leaking.items() if found} == {}
    assert count_rows(app.extensions["engine"], tasks) == 0


@pytest.mark.parametrize("url", FORBIDDEN_EVERYWHERE)
def test_the_gateway_refuses_what_stays_forbidden_on_the_local_stack(gateway, minted_user, url):
    response = gateway.post("/tasks", user=minted_user(), json={"url": url})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "source_url_rejected"


# --- at fetch time ---------------------------------------------------------------------------


class RebindingResolver:
    """A DNS that answers ``first`` once, then ``later`` for ever: the rebinding attack."""

    def __init__(self, first: list[str], later: list[str]) -> None:
        self.first, self.later = first, later
        self.calls = 0

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        return self.first if self.calls == 1 else self.later


@pytest.fixture
def connections(monkeypatch) -> list[tuple[str, int]]:
    """Every address the fetcher opens a socket to."""
    opened: list[tuple[str, int]] = []
    real = pinned_module.urllib3_connection.create_connection

    def recording(address, *args, **kwargs):
        opened.append(address)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(pinned_module.urllib3_connection, "create_connection", recording)
    return opened


def _fetcher(resolver=fetch_module.system_resolver) -> UrlFetcher:
    # Loopback is allowed only because the test's server stands on it.
    return UrlFetcher(
        FetchPolicy(
            allow_loopback=True,
            max_bytes=1_000_000,
            connect_timeout=2,
            read_timeout=2,
            total_timeout=10,
            min_bytes_per_second=0,
            throughput_grace=10,
            max_redirects=3,
        ),
        resolver=resolver,
    )


def test_the_connection_goes_to_the_address_that_was_checked_not_a_second_answer(
    source_server, connections, tmp_path
):
    source_server.files["/run.mp4"] = b"video bytes"
    port = int(source_server.base_url.rsplit(":", 1)[1])
    resolver = RebindingResolver(first=["127.0.0.1"], later=["169.254.169.254"])

    written = _fetcher(resolver).fetch(f"http://rebind.videos.example:{port}/run.mp4", tmp_path / "source")

    # One lookup, checked, and the socket opened to exactly that answer: a client that
    # looked the name up again to connect would have gone to the metadata address.
    assert written == len(b"video bytes")
    assert resolver.calls == 1
    assert connections == [("127.0.0.1", port)]


def test_a_name_rebound_before_the_next_connection_is_refused_at_that_connection(
    source_server, connections, tmp_path
):
    port = int(source_server.base_url.rsplit(":", 1)[1])
    source_server.files["/run.mp4"] = b"video bytes"
    resolver = RebindingResolver(first=["127.0.0.1"], later=["169.254.169.254"])
    # A same-host redirect: the server closes each connection (HTTP/1.0), so following
    # it needs a new connection, hence a new lookup, which now answers the metadata address.
    url = f"http://rebind.videos.example:{port}/redirect?to=/run.mp4"

    with pytest.raises(PermanentFailure, match="metadata"):
        _fetcher(resolver).fetch(url, tmp_path / "source")
    assert resolver.calls == 2
    assert connections == [("127.0.0.1", port)]
    assert source_server.requests == ["/redirect?to=/run.mp4"]


@pytest.mark.parametrize(
    "answers",
    [
        ["169.254.169.254"],
        ["127.0.0.1", "10.0.0.1"],
        ["fe80::1%eth0"],
        ["::ffff:169.254.169.254"],
        ["0.0.0.0"],
    ],
)
def test_a_name_resolving_to_a_forbidden_address_is_never_connected_to(answers, connections, tmp_path):
    with pytest.raises(PermanentFailure, match="the source host resolves to"):
        _fetcher(lambda host, port: answers).fetch("http://cdn.videos.example/run.mp4", tmp_path / "source")
    assert connections == []


@pytest.mark.parametrize(
    "address, kind",
    [
        ("10.0.0.1", "a private address"),
        ("172.16.5.4", "a private address"),
        ("192.168.1.20", "a private address"),
        ("fd12:3456::1", "a private address"),
        ("100.64.0.7", "a reserved address"),  # carrier-grade NAT
        ("169.254.169.254", "a cloud metadata address"),
        ("fe80::1%eth0", "a link-local address"),
        ("::ffff:10.1.2.3", "a private address"),
    ],
)
def test_a_refused_answer_is_named_by_its_kind_never_by_the_address(
    address, kind, connections, tmp_path, caplog
):
    # The reason reaches the task's owner: the address would map the network behind the
    # worker. The operator's log line keeps it.
    caplog.set_level(logging.WARNING, logger="services.transcoder.fetch")
    with pytest.raises(PermanentFailure) as refused:
        _fetcher(lambda host, port: [address]).fetch("http://cdn.videos.example/run.mp4", tmp_path / "source")
    assert refused.value.reason == f"the source host resolves to {kind}, which is not allowed"
    assert address.split("%")[0] not in refused.value.reason and "10." not in refused.value.reason
    assert connections == []
    assert any(address in r.getMessage() and "cdn.videos.example" in r.getMessage() for r in caplog.records)


def test_a_redirect_to_an_address_spelt_otherwise_does_not_say_how_it_was_read(source_server, tmp_path):
    with pytest.raises(PermanentFailure) as refused:
        _fetcher().fetch(source_server.url("/redirect?to=http://0xa.1/"), tmp_path / "source")
    assert refused.value.reason == "source URL points at a private address"  # not "(10.0.0.1)"


REDIRECT_TARGETS = [
    ("http://2852039166/latest/meta-data/", "metadata"),
    ("http://0xa9.0xfe.0xa9.0xfe/", "metadata"),
    ("http://0251.0376.0251.0376/", "metadata"),
    ("http://metadata.google.internal./computeMetadata/v1/", "metadata"),
    ("http://[::ffff:a9fe:a9fe]/", "metadata"),
    ("http://[fe80::1%25eth0]/", "link-local"),
    ("http://0xa.1/", "private"),
    ("http://0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("gopher://127.0.0.1:6379/_FLUSHALL", "http or https"),
    ("file:///etc/passwd", "http or https"),
    ("http://[::1/", "cannot be fetched"),
    ("http://①②⑦.0.0.1/", "invalid host name"),  # the Location header carries it mangled
    ("http://a..b/", "invalid host name"),
]


@pytest.mark.parametrize("target, reason", REDIRECT_TARGETS)
def test_a_redirect_to_a_forbidden_target_is_refused_before_connecting_there(
    source_server, connections, tmp_path, target, reason
):
    port = int(source_server.base_url.rsplit(":", 1)[1])
    with pytest.raises(PermanentFailure, match=reason):
        _fetcher().fetch(source_server.url(f"/redirect?to={target}"), tmp_path / "source")
    assert connections == [("127.0.0.1", port)]
    assert not (tmp_path / "source").exists()


@pytest.mark.parametrize(
    "url, reason",
    [
        # 127.0.0.1 by IDNA 2003, allowed here (loopback); urllib3's stricter IDNA refuses it.
        ("http://①②⑦.0.0.1/run.mp4", "cannot be fetched"),
        ("http://１６９．２５４．１６９．２５４/", "metadata"),
        ("http://169。254。169。254/", "metadata"),
        ("http://a..b/run.mp4", "invalid host name"),
        ("http://" + "a" * 64 + ".example/run.mp4", "invalid host name"),
    ],
)
def test_a_host_in_another_script_is_judged_by_its_idna_form_before_any_connection(
    url, reason, connections, tmp_path
):
    # What the HTTP client would look up is what the policy checks; a host it could not
    # encode at all once escaped as the client's own exception and ended the worker.
    with pytest.raises(PermanentFailure, match=reason):
        _fetcher().fetch(url, tmp_path / "source")
    assert connections == []


# --- end to end: the task ends failed with the reason -----------------------------------------

END_TO_END = [
    ("redirect", "http://2852039166/computeMetadata/v1/", "metadata"),
    ("redirect", "gopher://127.0.0.1:6379/_FLUSHALL", "http or https"),
    ("redirect", "http://[fe80::1%25eth0]/", "link-local"),
]


@pytest.mark.parametrize("how, target, reason", END_TO_END)
def test_a_task_that_passes_submit_but_fetches_a_forbidden_target_ends_failed(
    local_stack, gateway, minted_user, source_server, how, target, reason
):
    user = minted_user()
    url = source_server.url(f"/redirect?to={target}") if how == "redirect" else target
    submitted = gateway.post("/tasks", user=user, json={"url": url}, echoed=[url])
    assert submitted.status_code == 202, submitted.text

    task = wait_for_outcome(gateway, user, submitted.json()["id"])

    assert task["status"] == "failed"
    assert reason in task["failure_reason"]
    assert task["clips"] == []
    assert not leaks_in(task["failure_reason"])
    if how == "redirect":
        # One request: the redirect; nothing followed it.
        assert len(source_server.requests) == 1 and source_server.requests[0].startswith("/redirect?to=")
    assert local_stack.stack.dead() == []  # the worker survived it
