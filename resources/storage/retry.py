"""Retries with exponential backoff for storage calls: transient faults (network, throttling, timeouts)
are retried; persistent ones (permissions, missing buckets, bad paths) fail at once with a clear message."""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
TRANSIENT_ERRNOS = {errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNABORTED, errno.EIO}
# Exception class names of S3 clients (botocore, aiobotocore, aiohttp) that mean "try again later".
TRANSIENT_NAMES = {
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ClientConnectorError",
    "ServerDisconnectedError", "ClientPayloadError", "SlowDown", "ServiceUnavailable", "InternalError",
    "RequestTimeout", "Throttling", "ThrottlingException",
}  # fmt: skip


class StorageError(OSError):
    """A storage call failed for good (persistent fault, or a transient one that outlasted every retry)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a storage call is retried."""

    attempts: int = 5
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 8.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based): doubling, capped."""
        return min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1))


DEFAULT_POLICY = RetryPolicy()


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` (or an exception it was raised from) is worth retrying."""
    while error is not None:
        if isinstance(error, (PermissionError, FileNotFoundError, IsADirectoryError, NotADirectoryError)):
            return False
        if isinstance(error, (ConnectionError, TimeoutError)) or type(error).__name__ in TRANSIENT_NAMES:
            return True
        if isinstance(error, OSError) and error.errno in TRANSIENT_ERRNOS:
            return True
        error = error.__cause__ or error.__context__
    return False


def retrying(
    action: Callable[[], T], what: str, policy: RetryPolicy = DEFAULT_POLICY,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``action``; retry transient failures with backoff; raise :class:`StorageError` naming ``what``."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return action()
        except Exception as error:  # noqa: BLE001 - classified just below
            if not is_transient(error):
                raise StorageError(f"{what} failed ({type(error).__name__}: {error}); not retried: "
                                   "this is not a transient fault") from error
            if attempt == policy.attempts:
                raise StorageError(f"{what} failed {attempt} times with transient errors, last: "
                                   f"{type(error).__name__}: {error}") from error
            delay = policy.delay(attempt)
            log.warning("%s: transient %s (%s); retry %d/%d in %.1f s", what, type(error).__name__, error,
                        attempt, policy.attempts - 1, delay)
            sleep(delay)
    raise AssertionError("unreachable")
