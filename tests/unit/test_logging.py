"""The JSON log lines: one object per line with severity, message, the task id and the
exception text; the task id of the lines logged in a task's context (``about_task``)."""

import contextvars
import io
import json
import logging
import sys
import threading
import uuid

import pytest

from shared.logging import JsonFormatter, about_task, configure_logging, current_task, task_logger


def _record(level=logging.INFO, message="clip %d done", args=(2,), exc_info=None, **extra):
    record = logging.LogRecord("services.transcoder.worker", level, __file__, 1, message, args, exc_info)
    record.__dict__.update(extra)
    return record


def test_a_line_carries_severity_message_service_and_logger():
    line = json.loads(JsonFormatter("transcoder").format(_record(logging.WARNING)))
    assert line["severity"] == "WARNING"
    assert line["message"] == "clip 2 done"
    assert line["service"] == "transcoder" and line["logger"] == "services.transcoder.worker"
    assert line["time"].endswith("+00:00")
    assert "exception" not in line


def test_a_task_id_passed_as_extra_is_a_field_of_the_line():
    line = json.loads(JsonFormatter("api").format(_record(task_id="3f2c", attempt=2)))
    assert line["task_id"] == "3f2c" and line["attempt"] == 2


def test_an_exception_is_written_with_its_traceback_on_the_same_line():
    try:
        raise ValueError("bad frame rate")
    except ValueError:
        record = _record(logging.ERROR, "probe failed", (), exc_info=sys.exc_info())
    text = JsonFormatter("transcoder").format(record)
    assert "\n" not in text
    line = json.loads(text)
    assert line["severity"] == "ERROR"
    assert "Traceback" in line["exception"] and "ValueError: bad frame rate" in line["exception"]


def test_a_value_json_cannot_hold_is_written_as_text():
    line = json.loads(JsonFormatter("api").format(_record(path=object.__new__(object))))
    assert line["path"].startswith("<object object")


@pytest.fixture
def json_lines():
    """The process's JSON logging as configure_logging sets it up (its handler writing to
    a buffer instead of stdout), read back as objects."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    configure_logging("api")
    (handler,) = root.handlers
    buffer = io.StringIO()
    handler.setStream(buffer)
    yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    root.handlers[:] = saved
    root.setLevel(level)


def test_every_logger_s_line_in_a_task_s_context_carries_its_id(json_lines):
    plain = logging.getLogger("tests.unit.test_logging.plain")  # no filter of its own
    task_id = uuid.UUID("6f1c2a4e-0000-4000-8000-000000000001")
    plain.info("before")
    with about_task(task_id):
        plain.info("during")
        assert current_task() == str(task_id)
        with about_task("other"):
            plain.info("nested")
        plain.info("named", extra={"task_id": "named-by-the-line"})
    plain.info("after")
    assert current_task() is None
    assert [(line["message"], line.get("task_id")) for line in json_lines()] == [
        ("before", None),
        ("during", str(task_id)),
        ("nested", "other"),
        ("named", "named-by-the-line"),
        ("after", None),
    ]


def test_no_task_id_field_for_about_task_none(json_lines):
    log = logging.getLogger("tests.unit.test_logging.none")
    with about_task("t-1"), about_task(None):
        log.warning("about no task")
    assert "task_id" not in json_lines()[0]


def test_a_thread_in_a_copy_of_the_context_logs_about_the_same_task(json_lines):
    log = logging.getLogger("tests.unit.test_logging.thread")
    with about_task("t-5"):
        context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(log.warning, "from the thread"))
    thread.start()
    thread.join()
    log.warning("not in the copy")
    assert [line.get("task_id") for line in json_lines()] == ["t-5", None]


def test_a_task_logger_tags_its_records_for_any_handler():
    captured: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record)

    log = task_logger("tests.unit.test_logging.tagged")
    keep = Keep()
    log.addHandler(keep)
    try:
        with about_task("t-6"):
            log.error("failed")
    finally:
        log.removeHandler(keep)
    assert [getattr(record, "task_id", None) for record in captured] == ["t-6"]
