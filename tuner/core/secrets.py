"""Credentials in storage and tracking URLs never leave the process: printed, logged or written,
a URL's password reads `***`.

Where a child process needs the real URL (the MLflow UI and server), it goes through the child's
environment, which `ps` does not show to other users, never through its command line.
"""

from __future__ import annotations

import logging
import re

# scheme://user:password@  (the password up to the last @ before a slash or a space)
_USER_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^\s/]*@")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&](?:password|passwd|pwd)=)[^&\s]*", re.IGNORECASE)


def redact_url(text: str) -> str:
    """`text` (a URL, or a message or file that holds URLs) with every URL password as `***`."""
    return _QUERY_PASSWORD.sub(r"\g<head>***", _USER_PASSWORD.sub(r"\g<head>***@", text))


class RedactingFilter(logging.Filter):
    """On the `tuner` logger: a URL in a log line (an exception's text, say) loses its password."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact_url(record.getMessage()), None
        return True


def redact_logs() -> None:
    logger = logging.getLogger("tuner")
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())
