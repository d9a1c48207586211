"""Logging of `dockyard serve`: uvicorn's set-up, Dockyard's loggers, text or JSON lines.

One noise is tamed: docker first tries TLS on a plain-HTTP registry, and uvicorn
warns "Invalid HTTP request received." for every such probe. The connection protocol
(`registry.connections`) logs it as one debug line naming the client instead, and
`DropInvalidRequestWarning` drops uvicorn's warning.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from typing import Any

import uvicorn

from registry.config import LogConfig

INVALID_REQUEST = "Invalid HTTP request received."


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message (and the traceback, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        fields: dict[str, Any] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return json.dumps(fields)


class DropInvalidRequestWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != INVALID_REQUEST


def log_config(config: LogConfig) -> dict[str, Any]:
    """uvicorn's logging, plus Dockyard's own loggers at the configured level and format."""
    settings = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    settings["loggers"]["dockyard"] = {"handlers": ["default"], "level": config.level.upper()}
    settings["filters"] = {"invalid_request": {"()": DropInvalidRequestWarning}}
    settings["loggers"]["uvicorn.error"]["filters"] = ["invalid_request"]
    if config.format == "json":
        for formatter in settings["formatters"].values():
            formatter.clear()
            formatter["()"] = JsonFormatter
    return settings
