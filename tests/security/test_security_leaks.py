"""The leak scan every test in this folder runs on every answer it receives (the
gateway client, the in-process client, the schemathesis scenarios): it must find what
it looks for, and pass the platform's ordinary answers."""

from __future__ import annotations

import pytest

from tests.support.security import leaks_in

pytestmark = pytest.mark.security


@pytest.mark.parametrize(
    "body, what",
    [
        (
            'Traceback (most recent call last):\n  File "/work/main/services/api/routes.py", line 3',
            "a traceback",
        ),
        ('{"error": {"message": "cannot open /tmp/task-1234/source"}}', "a file path"),
        ('{"error": {"message": "No such file: /var/lib/idrl/logo.png"}}', "a file path"),
        ("lib/python3.11/site-packages/flask/app.py", "a file path"),
        ('syntax error at or near "SELECT"', "SQL"),
        ("SELECT id, owner_id FROM tasks WHERE id = 1", "SQL"),
        ('duplicate key value violates unique constraint "users_email_key"', "SQL"),
        ("(pg8000.exceptions.DatabaseError) {'S': 'ERROR'}", "SQL"),
        ("ValueError: Invalid IPv6 URL", "an exception name"),
        ("[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55d0c0ffee00] moov atom not found", "a memory address"),
        ("<urllib3.connection.HTTPConnection object at 0x7f43a249af50>", "a memory address"),
    ],
)
def test_the_scan_finds_each_kind_of_leak(body, what):
    found = leaks_in(body)
    assert any(item.startswith(what) for item in found), found


def test_the_scan_finds_another_users_data_and_ignores_what_the_client_sent():
    assert leaks_in('{"email": "rival@league.example"}', foreign=["rival@league.example"])
    assert (
        leaks_in('{"source": {"url": "http://a.example/tmp/x.py"}}', echoed=["http://a.example/tmp/x.py"])
        == []
    )


@pytest.mark.parametrize(
    "body",
    [
        '{"error": {"code": "task_not_found", "message": "task not found"}}',
        '{"error": {"code": "source_url_rejected", "message": "source URL points at a loopback address (127.0.0.1)"}}',
        '{"id": "5f0c", "links": {"self": "/tasks/5f0c", "original": "/tasks/5f0c/original"}}',
        '{"failure_reason": "the source is 16000x16000, over the 7680x4320 limit"}',
        '{"failure_reason": "the source could not be decoded (Format not on whitelist \'mov,mp4\'; source: Invalid argument)"}',
        '{"error": {"code": "invalid_token", "message": "invalid token: Signature verification failed"}}',
        '{"source": {"kind": "url", "url": "https://videos.league.example/runs/tmp/run.mp4"}}',
    ],
)
def test_ordinary_answers_pass(body):
    assert leaks_in(body) == []
