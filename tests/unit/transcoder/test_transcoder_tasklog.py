"""The task id on the transcoder's log lines: set once per task, kept by explicit ids,
written by the platform's JSON formatter unchanged."""

import contextvars
import json
import logging
import threading

import pytest

from services.transcoder.tasklog import about_task, task_logger
from shared.logging import JsonFormatter


@pytest.fixture
def records():
    captured: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record)

    logger = task_logger("services.transcoder.test_tasklog")
    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield logger, captured
    logger.removeHandler(handler)


def test_lines_in_a_task_s_context_carry_its_id(records):
    log, captured = records
    log.info("before")
    with about_task("t-1"):
        log.info("during")
        with about_task("t-2"):
            log.info("nested")
        log.info("back", extra={"task_id": "named-by-the-line"})
    log.info("after")
    assert [(r.getMessage(), getattr(r, "task_id", None)) for r in captured] == [
        ("before", None),
        ("during", "t-1"),
        ("nested", "t-2"),
        ("back", "named-by-the-line"),
        ("after", None),
    ]


def test_a_thread_started_in_a_copy_of_the_context_logs_about_the_same_task(records):
    log, captured = records
    with about_task("t-3"):
        context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(log.warning, "from the watcher"))
    thread.start()
    thread.join()
    assert [getattr(r, "task_id", None) for r in captured] == ["t-3"]


def test_the_json_line_has_the_task_id_field(records):
    log, captured = records
    with about_task("t-4"):
        log.info("processing, attempt %d", 1)
    line = json.loads(JsonFormatter("transcoder").format(captured[0]))
    assert (line["message"], line["task_id"], line["severity"]) == ("processing, attempt 1", "t-4", "INFO")


def test_a_logger_gets_the_filter_once():
    first = task_logger("services.transcoder.test_tasklog_once")
    assert task_logger("services.transcoder.test_tasklog_once") is first
    assert len(first.filters) == 1
