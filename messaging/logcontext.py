"""Log lines that say which request caused them.

The API server makes each request's :class:`~messaging.deadline.Deadline` current while its
handler runs, and the deadline carries a label (``req 17 VM.destroy``). :class:`RequestFilter`,
installed on the daemon's log handler, adds that label to every line written meanwhile on the
serving thread as ``%(request)s`` (`` [req 17 VM.destroy]``, or nothing outside a request), so
an action's log lines name the verb and the request id that caused it.
"""

from __future__ import annotations

import logging

from messaging import deadline

FORMAT = "%(asctime)s %(levelname)-7s [%(threadName)s] %(name)s:%(request)s %(message)s"


class RequestFilter(logging.Filter):
    """Adds ``record.request``: the current request's label, or "" (never drops a line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        label = deadline.label()
        record.request = f" [{label}]" if label else ""
        return True
