"""The JSON log lines: one object per line with severity, message, the task id and the
exception text."""

import json
import logging
import sys

from shared.logging import JsonFormatter


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
