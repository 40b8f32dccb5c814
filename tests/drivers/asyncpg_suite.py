"""asyncpg through pgsplit: named prepared statements (explicit `prepare`, executed in later transactions).

Run by tests/drivers.rs with DATABASE_URL pointing at pgsplit. Exits non-zero with a message on the first failed check;
prints one summary line on success. Statements on the new tables are prepared and read inside explicit transactions
(on the leader), because an autocommit read may be served by a follower that has not replayed them yet.
"""

import asyncio
import io
import os
import sys
import time
import traceback

import asyncpg

from suite_common import CLIENTS, ROUNDS, SuiteError, check, check_round_trip, copy_rows, finish, names, phase_failed

DRIVER = "asyncpg"
ITEMS, COPY_TABLE, SCHEMA, CHANNEL = names(DRIVER)
TIME_LIMIT = 60


async def connect():
    return await asyncpg.connect(os.environ["DATABASE_URL"], timeout=10)


async def setup(conn):
    for sql in [
        f"DROP TABLE IF EXISTS {ITEMS}, {COPY_TABLE}",
        f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE",
        f"CREATE SCHEMA {SCHEMA}",
        f"CREATE TABLE {SCHEMA}.sp_marker (driver text NOT NULL)",
        f"INSERT INTO {SCHEMA}.sp_marker VALUES ('{DRIVER}')",
        f"CREATE TABLE {ITEMS} (id bigserial PRIMARY KEY, client int NOT NULL, n int NOT NULL, val text NOT NULL)",
        f"CREATE TABLE {COPY_TABLE} (id int PRIMARY KEY, label text, amount bigint NOT NULL)",
    ]:
        await conn.execute(sql)


async def worker(conn, client):
    """CRUD, transactions and prepared statements on one connection; search_path set once, used by every round."""
    await conn.execute(f"SET search_path TO {SCHEMA}, public")
    async with conn.transaction():
        insert = await conn.prepare(f"INSERT INTO {ITEMS} (client, n, val) VALUES ($1, $2, $3) RETURNING id")
        get = await conn.prepare(f"SELECT client, n, val FROM {ITEMS} WHERE id = $1")
        update = await conn.prepare(f"UPDATE {ITEMS} SET val = $2 WHERE id = $1")
        marker = await conn.prepare("SELECT driver FROM sp_marker")
        count = await conn.prepare(f"SELECT count(*) FROM {ITEMS} WHERE client = $1")
        delete_evens = await conn.prepare(f"DELETE FROM {ITEMS} WHERE client = $1 AND n % 2 = 0")
    calc = await conn.prepare("SELECT $1::int * 2 + $2::int")

    for i in range(ROUNDS):
        val = f"c{client}-{i}"
        async with conn.transaction():
            row_id = await insert.fetchval(client, i, val)
            got = tuple(await get.fetchrow(row_id))
            check(got == (client, i, val), f"client {client}: read-after-write of id {row_id} gave {got!r}")
            await update.fetch(row_id, val + "-u")
            check(update.get_statusmsg() == "UPDATE 1", f"client {client}: UPDATE said {update.get_statusmsg()!r}")
            found = await marker.fetchval()
            check(found == DRIVER, f"client {client}: unqualified sp_marker (search_path) gave {found!r}")
        # Autocommit reads independent of replication: these may run on a follower.
        doubled = await calc.fetchval(i, client)
        check(doubled == i * 2 + client, f"client {client}: {i}*2+{client} gave {doubled}")
    path = await conn.fetchval("SELECT current_setting('search_path')")
    check(SCHEMA in path, f"client {client}: search_path is {path!r} after {ROUNDS} transactions")

    async with conn.transaction():
        updated = await conn.fetchval(f"SELECT count(*) FROM {ITEMS} WHERE client = $1 AND val LIKE '%-u'", client)
        total = await count.fetchval(client)
    check((total, updated) == (ROUNDS, ROUNDS), f"client {client}: (rows, updated) = {(total, updated)}")

    evens = (ROUNDS + 1) // 2
    tx = conn.transaction()
    await tx.start()
    await delete_evens.fetch(client)
    check(delete_evens.get_statusmsg() == f"DELETE {evens}", f"client {client}: {delete_evens.get_statusmsg()!r}")
    left = await count.fetchval(client)
    check(left == ROUNDS - evens, f"client {client}: {left} rows inside the deleting transaction")
    await tx.rollback()
    async with conn.transaction():
        left = await count.fetchval(client)
    check(left == ROUNDS, f"client {client}: {left} rows after ROLLBACK, expected {ROUNDS}")

    async with conn.transaction():
        await delete_evens.fetch(client)
    async with conn.transaction():
        left = await count.fetchval(client)
    check(left == ROUNDS - evens, f"client {client}: {left} rows after the committed DELETE")


async def guarded_worker(conn, client):
    """A client that failed disconnects at once, so a transaction it left open holds no server connection."""
    try:
        await worker(conn, client)
    except BaseException:
        conn.terminate()
        raise


async def crud_and_prepared():
    """All clients connected first, then run at once; every failure is reported."""
    conns = await asyncio.gather(*(connect() for _ in range(CLIENTS)))
    try:
        workers = (guarded_worker(conn, client) for client, conn in enumerate(conns))
        errors = await asyncio.gather(*workers, return_exceptions=True)
    finally:
        await asyncio.gather(*(conn.close() for conn in conns if not conn.is_closed()), return_exceptions=True)
    failed = [e for e in errors if isinstance(e, BaseException)]
    if failed:
        distinct = sorted({f"{type(e).__name__}: {str(e).splitlines()[0]}" for e in failed})
        shown = distinct[:5] + ([f"... {len(distinct) - 5} more"] if len(distinct) > 5 else [])
        raise SuiteError(f"{len(failed)} of {CLIENTS} clients failed; distinct errors: {shown}") from failed[0]


async def listen_notify():
    payloads = [f"{DRIVER}-payload-{n}" for n in range(3)]
    listener, notifier = await connect(), await connect()
    try:
        queue = asyncio.Queue()
        await listener.add_listener(CHANNEL, lambda _conn, _pid, channel, payload: queue.put_nowait((channel, payload)))
        for payload in payloads:
            await notifier.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
        received = []
        for _ in payloads:
            try:
                received.append(await asyncio.wait_for(queue.get(), timeout=10))
            except asyncio.TimeoutError:
                break
        check(received == [(CHANNEL, p) for p in payloads], f"LISTEN got {received!r}, expected {payloads!r}")
    finally:
        await listener.close()
        await notifier.close()


ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def text_field(field):
    """One column of COPY's text format: `\\N` is NULL, backslash escapes are undone."""
    if field == "\\N":
        return None
    out, chars = [], iter(field)
    for ch in chars:
        out.append(ESCAPES.get(next(chars, ""), "") if ch == "\\" else ch)
    return "".join(out)


async def copy_both_ways():
    expected = copy_rows()
    conn = await connect()
    try:
        # In a transaction: copy_records_to_table first reads the new table's columns, which only the leader has surely.
        async with conn.transaction():
            await conn.copy_records_to_table(COPY_TABLE, records=expected, columns=["id", "label", "amount"])
        out = io.BytesIO()
        async with conn.transaction():
            await conn.copy_from_query(f"SELECT id, label, amount FROM {COPY_TABLE} ORDER BY id", output=out)
    finally:
        await conn.close()
    lines = out.getvalue().decode().split("\n")
    check(lines[-1] == "", "COPY TO output does not end with a newline")
    got = []
    for line in lines[:-1]:
        id_, label, amount = (text_field(f) for f in line.split("\t"))
        got.append((int(id_), label, int(amount)))
    check_round_trip(expected, got)


PHASES = [
    ("CRUD, transactions, prepared statements, search_path", crud_and_prepared),
    ("LISTEN/NOTIFY", listen_notify),
    ("COPY", copy_both_ways),
]


async def main():
    """Runs every phase (after setup), so one failure does not hide the state of the others; 1 if any failed."""
    started = time.monotonic()
    conn = await connect()
    try:
        await setup(conn)
    finally:
        await conn.close()
    failed = []
    for name, phase in PHASES:
        try:
            await phase()
        except Exception as error:  # noqa: BLE001 - reported, and the suite fails at the end
            phase_failed(DRIVER, name, error, failed)
    return finish(DRIVER, asyncpg.__version__, failed, started)


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(asyncio.wait_for(main(), timeout=TIME_LIMIT)))
    except Exception as error:  # noqa: BLE001 - setup failed, or out of time
        traceback.print_exc()
        print(f"{DRIVER} suite FAILED: {type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
