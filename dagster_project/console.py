"""What a run prints: one line per log message on the console (the stack trace of a failure stays in the event log,
and on the console with ``--verbose``), and each failed step's cause in one line, without Dagster's wrapper text."""

from __future__ import annotations

import logging
import sys
from typing import Any

from dagster import DagsterEventType, DagsterInstance, Field, InitLoggerContext, LoggerDefinition, logger

FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
MAX_CAUSE = 600


class _FirstLine(logging.Formatter):
    """Dagster's console format, each message cut to its first line (a failure's stack trace follows it)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        return super().formatMessage(record).split("\n", 1)[0]


@logger(
    config_schema={"log_level": Field(str, default_value="INFO", is_required=False),
                   "verbose": Field(bool, default_value=False, is_required=False,
                                    description="print failures with their stack traces")},
    description="Dagster's console logger with one line per message unless verbose",
)
def console_logger(init_context: InitLoggerContext) -> logging.Logger:
    """A console logger writing to stderr; stack traces only when ``verbose``."""
    config = init_context.logger_config
    log = logging.Logger("dagster", level=logging.getLevelName(config["log_level"].upper()))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT) if config["verbose"] else _FirstLine(FORMAT))
    log.addHandler(handler)
    return log


CONSOLE: dict[str, LoggerDefinition] = {"console": console_logger}


def one_line(error: Any) -> str:
    """The cause of a Dagster error (the ``SerializableErrorInfo`` of a failure event) in one line: the first error
    of its chain that is not Dagster's wrapper, as ``ErrorClass: message``, whitespace collapsed."""
    while error.cls_name and error.cls_name.startswith("Dagster") and (error.cause or error.context):
        error = error.cause or error.context
    text = " ".join(error.message.split())
    prefix = text.split(": ", 1)[0]
    if prefix.endswith(error.cls_name or "\x00"):  # "package.module.DataError: msg" -> "msg"
        text = text.split(": ", 1)[1] if ": " in text else ""
    line = f"{error.cls_name}: {text}" if error.cls_name else text
    return line if len(line) <= MAX_CAUSE else f"{line[: MAX_CAUSE - 1]}…"


def failed_steps(instance: DagsterInstance, run_id: str) -> dict[str, str]:
    """Each failed step of run ``run_id`` and its cause in one line (the run's own failure when no step failed,
    e.g. a resource that could not start)."""
    causes = {}
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE):
        causes[entry.step_key] = one_line(entry.dagster_event.event_specific_data.error)
    if not causes:
        for entry in instance.all_logs(run_id, of_type=DagsterEventType.RUN_FAILURE):
            data = entry.dagster_event.event_specific_data
            error = getattr(data, "error", None)
            causes["run"] = one_line(error) if error is not None else entry.dagster_event.message or "failed"
    return causes
