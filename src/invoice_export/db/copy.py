"""Read a `COPY ... TO STDOUT (FORMAT csv)` as CSV records ending in CRLF, with little Python per row.

psycopg's `Cursor.copy` spends most of its time in Python for every CopyData message (a generator
and a wait per record), which for an export is per row: 14-16 ms of CPU a page of 5,000 rows,
held under the GIL that the worker's page threads share. This reads the same protocol through
psycopg's libpq binding (`psycopg.pq`): the messages that libpq has buffered are taken in a tight
loop and the socket is waited on only when none is left: 7-8 ms of CPU for the same page, measured
side by side on this machine.

The server sends exactly one record per CopyData message and ends each with LF; the LF is
replaced by CRLF here, without looking inside fields (an LF inside a quoted field is data).
"""

from __future__ import annotations

import select
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import pq
from psycopg.errors import error_from_result


@dataclass(frozen=True)
class CopiedRecords:
    data: bytes
    rows: int


def copy_csv_records(conn: psycopg.Connection[Any], query: str, params: dict[str, Any]) -> CopiedRecords:
    """Run `query` (one COPY ... TO STDOUT) in the connection's current transaction and return its
    records with CRLF endings. `params` are bound client side, as psycopg binds a COPY's.

    A server error (a failed statement, a cancel, a timeout) is raised as psycopg raises it, and
    the connection stays usable once the transaction is rolled back. Anything else that
    interrupts the read leaves the protocol mid-stream, so the connection is closed: the pool
    then drops it instead of handing it out again."""
    if conn.info.transaction_status != pq.TransactionStatus.INTRANS:
        raise RuntimeError("copy_csv_records runs inside an open transaction (after its first statement)")
    statement = psycopg.ClientCursor(conn).mogrify(query, params).encode()
    pgconn = conn.pgconn
    with conn.lock:
        try:
            pgconn.send_query(statement)
            while pgconn.flush() == 1:  # the connection is non-blocking: send all of the query
                _wait(pgconn, select.POLLOUT)
            _result(pgconn, pq.ExecStatus.COPY_OUT)
            data = _records(pgconn)
            done = _result(pgconn, pq.ExecStatus.COMMAND_OK)
            if pgconn.get_result() is not None:
                raise psycopg.ProgrammingError("copy_csv_records takes one COPY statement")
        except psycopg.errors.DatabaseError as error:
            if pgconn.transaction_status == pq.TransactionStatus.ACTIVE or error.sqlstate is None:
                conn.close()  # not a server's answer: the protocol is not where psycopg expects it
            raise
        except BaseException:
            conn.close()
            raise
    return CopiedRecords(data=data, rows=int(done.command_tuples or 0))


def _records(pgconn: pq.abc.PGconn) -> bytes:
    page = bytearray()
    get = pgconn.get_copy_data
    while True:
        size, record = get(1)  # 1: never block; 0 means no whole message is buffered yet
        if size > 0:
            page += record
            page[-1:] = b"\r\n"
        elif size == 0:
            _wait(pgconn, select.POLLIN)
        elif size == -1:
            return bytes(page)
        else:
            raise psycopg.OperationalError(f"reading the COPY failed: {_message(pgconn)}")


def _result(pgconn: pq.abc.PGconn, expected: pq.ExecStatus) -> pq.abc.PGresult:
    """The next result, which must be `expected`. A server error is raised once every result of
    the statement has been read, so the connection is ready for the rollback."""
    while pgconn.is_busy():
        _wait(pgconn, select.POLLIN)
    result = pgconn.get_result()
    if result is None:
        raise psycopg.OperationalError(f"the server sent no result for the COPY: {_message(pgconn)}")
    if result.status == expected:
        return result
    if result.status == pq.ExecStatus.FATAL_ERROR:
        while pgconn.get_result() is not None:
            pass
        raise error_from_result(result)
    raise psycopg.ProgrammingError(
        f"copy_csv_records takes a COPY ... TO STDOUT; the server answered {pq.ExecStatus(result.status).name}"
    )


def _wait(pgconn: pq.abc.PGconn, event: int) -> None:
    """Block until the socket is ready (or closed, which the next libpq call then reports). A
    server that vanishes without closing the connection leaves this waiting until the kernel
    gives up on it; the worker's fence (`worker.py`) stops the process well before that."""
    poller = select.poll()
    poller.register(pgconn.socket, event)
    poller.poll()
    if event == select.POLLIN:
        pgconn.consume_input()


def _message(pgconn: pq.abc.PGconn) -> str:
    return pgconn.error_message.decode(errors="replace").strip() or "connection lost"
