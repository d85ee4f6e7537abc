"""structlog set-up: JSON lines (or a console format) on stderr, for services and the CLI alike."""

from __future__ import annotations

import logging
import os
import sys

import structlog

# What the libraries a service runs write on their own: progress bars (tqdm: transformers,
# sentence-transformers, huggingface_hub), MLflow's own log handler and its "View run at" lines, and
# transformers' advice. A service turns them off (an operator's own values win), so that every line of its
# log is one JSON object.
_QUIET_LIBRARIES = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "MLFLOW_CONFIGURE_LOGGING": "false",
                    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true", "TRANSFORMERS_VERBOSITY": "error",
                    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}


def _processors() -> list:
    return [structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True), structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info]


def configure_service_logging(level: str = "info", fmt: str = "json") -> None:
    """`configure_logging` for a service (`es serve`), before the service's libraries are imported:
    their bars off, and what they log through the standard `logging` module (MLflow, SQLAlchemy, gRPC's
    Python side) and Python's warnings rendered by structlog like the service's own lines."""
    for name, value in _QUIET_LIBRARIES.items():
        os.environ.setdefault(name, value)
    configure_logging(level, fmt)
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *_processors()]))
    root = logging.getLogger()
    root.handlers = [handler]
    # The libraries' own INFO chatter stays out (sentence-transformers also draws its encode bars at INFO).
    root.setLevel(max(logging.getLevelNamesMapping()[level.upper()], logging.WARNING))
    logging.captureWarnings(True)


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*_processors(), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
