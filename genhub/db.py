"""Surviving a database connection that died under a long-running loop (a restart, a failover,
`pg_terminate_backend`).

Django reconnects only when a dead connection is closed: inside a task that loops for a minute
nothing does that, so every later query fails the same way. These helpers close the broken
connection of the calling thread and try again.
"""

import logging
import time

from django.db import Error as DatabaseError
from django.db import close_old_connections, connection

log = logging.getLogger(__name__)


def reconnect() -> None:
    """Drops this thread's connection if it is broken, so the next query opens a fresh one.

    Never inside a transaction: it could not be resumed on a new connection anyway (and the tests' own
    transaction must survive).
    """
    if connection.in_atomic_block:
        return
    try:
        close_old_connections()
    except DatabaseError:
        pass
    try:
        if connection.connection is not None and not connection.is_usable():
            connection.close()
    except DatabaseError:
        pass


def with_reconnect(call, *, attempts: int = 5, delay: float = 0.5, what: str = "database call"):
    """`call()`, retried on a database error after reconnecting; the last error is raised.

    Only for calls that are safe to repeat (compare-and-set updates, reads).
    """
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except DatabaseError as exc:
            if attempt == attempts:
                raise
            log.warning("%s failed (%s: %s); reconnecting, attempt %d/%d", what, type(exc).__name__,
                        str(exc).strip()[:200], attempt, attempts)
            reconnect()
            time.sleep(delay * attempt)
