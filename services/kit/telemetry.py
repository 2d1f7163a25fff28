"""Structured JSON logs and OpenTelemetry tracing."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from datetime import UTC, datetime

from opentelemetry import trace

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message and any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def setup_tracing(service: str, exporter: str) -> None:
    """`otlp` sends spans to OTEL_EXPORTER_OTLP_ENDPOINT, `console` prints them; empty keeps the
    no-op tracer (no cost beyond the API calls)."""
    if not exporter:
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": f"loyalty-{service}"}))
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    elif exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        raise ValueError(f"LOYALTY_TRACE_EXPORTER must be otlp, console or empty, not {exporter!r}")
    trace.set_tracer_provider(provider)


class Outage:
    """One dependency's availability, so that an outage logs two lines (gone, back) with a count
    of the failures in between, never one line per failed call."""

    def __init__(self, dependency: str, logger: logging.Logger):
        self.dependency = dependency
        self._log = logger
        self._lock = threading.Lock()
        self._since: float | None = None  # monotonic time the outage began
        self._failures = 0

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, exc: BaseException | str) -> bool:
        """Counts a failure; True (and one WARNING) if it begins an outage."""
        with self._lock:
            self._failures += 1
            if self._since is not None:
                return False
            self._since = time.monotonic()
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        self._log.warning("%s unavailable: %s", self.dependency, reason,
                          extra={"dependency": self.dependency, "event": "dependency_down"})
        return True

    def recovered(self) -> bool:
        """Ends an outage; True (and one WARNING with its length and failure count) if one was on."""
        if self._since is None:  # the common case costs no lock
            return False
        with self._lock:
            if self._since is None:
                return False
            seconds, failures = time.monotonic() - self._since, self._failures
            self._since, self._failures = None, 0
        self._log.warning("%s is back after %.1f s; %d failed attempts meanwhile", self.dependency, seconds, failures,
                          extra={"dependency": self.dependency, "event": "dependency_back",
                                 "outage_seconds": round(seconds, 1), "failures": failures})
        return True
