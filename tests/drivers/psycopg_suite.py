"""psycopg 3 through pgsplit: every statement a named server-side prepared statement (prepare_threshold=0).

Run by tests/drivers.rs with DATABASE_URL pointing at pgsplit. Exits non-zero with a message on the first failed check;
prints one summary line on success. The CRUD phase reads rows written moments ago inside explicit transactions (on
the leader); the read-your-writes phase reads them in autocommit, where pgsplit keeps them off followers that have
not replayed them yet.
"""

import os
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

import psycopg

from suite_common import CLIENTS, ROUNDS, SuiteError, check, check_round_trip, copy_rows, finish, names, phase_failed

DRIVER = "psycopg"
ITEMS, COPY_TABLE, SCHEMA, CHANNEL = names(DRIVER)
DEADLINE = time.monotonic() + 60


def in_time(what):
    check(time.monotonic() < DEADLINE, f"out of time during {what}")


def connect():
    return psycopg.connect(os.environ["DATABASE_URL"], autocommit=True, prepare_threshold=0, connect_timeout=10)


def setup(conn):
    for sql in [
        f"DROP TABLE IF EXISTS {ITEMS}, {COPY_TABLE}",
        f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE",
        f"CREATE SCHEMA {SCHEMA}",
        f"CREATE TABLE {SCHEMA}.sp_marker (driver text NOT NULL)",
        f"INSERT INTO {SCHEMA}.sp_marker VALUES ('{DRIVER}')",
        f"CREATE TABLE {ITEMS} (id bigserial PRIMARY KEY, client int NOT NULL, n int NOT NULL, val text NOT NULL)",
        f"CREATE TABLE {COPY_TABLE} (id int PRIMARY KEY, label text, amount bigint NOT NULL)",
    ]:
        conn.execute(sql)


def count_own(conn, client):
    return conn.execute(f"SELECT count(*) FROM {ITEMS} WHERE client = %s", (client,)).fetchone()[0]


def worker(client, barrier):
    """CRUD, transactions and prepared statements on one connection; search_path set once, used by every round."""
    with connect() as conn:
        conn.execute(f"SET search_path TO {SCHEMA}, public")
        barrier.wait()
        for i in range(ROUNDS):
            in_time(f"client {client} round {i}")
            val = f"c{client}-{i}"
            with conn.transaction():
                row_id = conn.execute(
                    f"INSERT INTO {ITEMS} (client, n, val) VALUES (%s, %s, %s) RETURNING id", (client, i, val)
                ).fetchone()[0]
                got = conn.execute(f"SELECT client, n, val FROM {ITEMS} WHERE id = %s", (row_id,)).fetchone()
                check(got == (client, i, val), f"client {client}: read-after-write of id {row_id} gave {got!r}")
                updated = conn.execute(f"UPDATE {ITEMS} SET val = %s WHERE id = %s", (val + "-u", row_id)).rowcount
                check(updated == 1, f"client {client}: UPDATE of id {row_id} touched {updated} rows")
                marker = conn.execute("SELECT driver FROM sp_marker").fetchone()[0]
                check(marker == DRIVER, f"client {client}: unqualified sp_marker (search_path) gave {marker!r}")
            # Autocommit reads independent of replication: these may run on a follower.
            doubled = conn.execute("SELECT %s::int * 2 + %s::int", (i, client)).fetchone()[0]
            check(doubled == i * 2 + client, f"client {client}: {i}*2+{client} gave {doubled}")
        path = conn.execute("SELECT current_setting('search_path')").fetchone()[0]
        check(SCHEMA in path, f"client {client}: search_path is {path!r} after {ROUNDS} transactions")

        with conn.transaction():
            rows = conn.execute(
                f"SELECT count(*), count(*) FILTER (WHERE val LIKE '%%-u') FROM {ITEMS} WHERE client = %s", (client,)
            ).fetchone()
        check(rows == (ROUNDS, ROUNDS), f"client {client}: (rows, updated rows) = {rows}, expected {ROUNDS} of each")

        evens = (ROUNDS + 1) // 2
        with conn.transaction() as tx:
            deleted = conn.execute(f"DELETE FROM {ITEMS} WHERE client = %s AND n %% 2 = 0", (client,)).rowcount
            check(deleted == evens, f"client {client}: deleted {deleted} rows, expected {evens}")
            left = count_own(conn, client)
            check(left == ROUNDS - evens, f"client {client}: {left} rows inside the deleting transaction")
            raise psycopg.Rollback(tx)
        with conn.transaction():
            left = count_own(conn, client)
        check(left == ROUNDS, f"client {client}: {left} rows after ROLLBACK, expected {ROUNDS}")

        with conn.transaction():
            conn.execute(f"DELETE FROM {ITEMS} WHERE client = %s AND n %% 2 = 0", (client,))
        with conn.transaction():
            left = count_own(conn, client)
        check(left == ROUNDS - evens, f"client {client}: {left} rows after the committed DELETE")


def guarded_worker(client, barrier):
    try:
        worker(client, barrier)  # a failed client's connection is closed as the exception leaves `with connect()`
    except BaseException:
        barrier.abort()  # the others stop waiting for this client
        raise


def crud_and_prepared():
    """All clients at once; every failure is reported (clients that only stopped waiting for a failed one aside)."""
    barrier = threading.Barrier(CLIENTS, timeout=30)
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        futures = [pool.submit(guarded_worker, client, barrier) for client in range(CLIENTS)]
        errors = [future.exception(timeout=max(1.0, DEADLINE - time.monotonic())) for future in futures]
    raise_failures([e for e in errors if not isinstance(e, threading.BrokenBarrierError)])


def raise_failures(errors):
    """Fails with how many clients failed, their distinct errors, and the first one as the cause."""
    failed = [e for e in errors if e is not None]
    if failed:
        distinct = sorted({f"{type(e).__name__}: {str(e).splitlines()[0]}" for e in failed})
        shown = distinct[:5] + ([f"... {len(distinct) - 5} more"] if len(distinct) > 5 else [])
        raise SuiteError(f"{len(failed)} of {CLIENTS} clients failed; distinct errors: {shown}") from failed[0]


def listen_notify():
    payloads = [f"{DRIVER}-payload-{n}" for n in range(3)]
    with connect() as listener, connect() as notifier:
        listener.execute(f"LISTEN {CHANNEL}")
        for payload in payloads:
            notifier.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
        received = [(n.channel, n.payload) for n in listener.notifies(timeout=10.0, stop_after=len(payloads))]
        check(received == [(CHANNEL, p) for p in payloads], f"LISTEN got {received!r}, expected {payloads!r}")


def copy_both_ways():
    expected = copy_rows()
    with connect() as conn:
        cur = conn.cursor()
        with cur.copy(f"COPY {COPY_TABLE} (id, label, amount) FROM STDIN") as copy:
            for row in expected:
                copy.write_row(row)
        with conn.transaction():
            with cur.copy(f"COPY (SELECT id, label, amount FROM {COPY_TABLE} ORDER BY id) TO STDOUT") as copy:
                copy.set_types(["int4", "text", "int8"])
                got = list(copy.rows())
    check_round_trip(expected, got)


def read_your_writes():
    """Autocommit reads of rows just written see them, and the floor carried to another connection through
    SHOW pgsplit.last_write_lsn / SET pgsplit.min_lsn (which psycopg prepares like every statement) shows it the row."""
    with connect() as writer, connect() as other:
        for n in range(20):
            in_time(f"read-your-writes round {n}")
            row_id = writer.execute(
                f"INSERT INTO {ITEMS} (client, n, val) VALUES (%s, %s, %s) RETURNING id", (-1, n, "ryw")
            ).fetchone()[0]
            got = writer.execute(f"SELECT val FROM {ITEMS} WHERE id = %s", (row_id,)).fetchone()
            check(got == ("ryw",), f"own write {row_id} read back as {got!r}")
            floor = writer.execute("SHOW pgsplit.last_write_lsn").fetchone()[0]
            check(floor != "0/0", "a write sets the connection's floor")
            other.execute(f"SET pgsplit.min_lsn = '{floor}'")
            shown = other.execute("SHOW pgsplit.last_write_lsn").fetchone()[0]
            check(shown == floor, f"the carried floor shows as {shown!r}, expected {floor!r}")
            got = other.execute(f"SELECT val FROM {ITEMS} WHERE id = %s", (row_id,)).fetchone()
            check(got == ("ryw",), f"the carried read of {row_id} gave {got!r}")


PHASES = [
    ("CRUD, transactions, prepared statements, search_path", crud_and_prepared),
    ("LISTEN/NOTIFY", listen_notify),
    ("COPY", copy_both_ways),
    ("read-your-writes", read_your_writes),
]


def main():
    """Runs every phase (after setup), so one failure does not hide the state of the others; 1 if any failed."""
    started = time.monotonic()
    with connect() as conn:
        setup(conn)
    failed = []
    for name, phase in PHASES:
        try:
            phase()
        except Exception as error:  # noqa: BLE001 - reported, and the suite fails at the end
            phase_failed(DRIVER, name, error, failed)
    return finish(DRIVER, psycopg.__version__, failed, started)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as error:  # noqa: BLE001 - setup failed
        traceback.print_exc()
        print(f"{DRIVER} suite FAILED: {type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
