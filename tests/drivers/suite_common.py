"""What the Python driver suites share: their table and channel names, sizes, checks and the rows COPY sends.

Imported by psycopg_suite.py and asyncpg_suite.py (Python puts the running script's folder on the import path).
"""

import os
import sys
import time
import traceback

CLIENTS = 16
# Fewer for the TLS variants (SUITE_ROUNDS), which run the same checks over TLS.
ROUNDS = int(os.environ.get("SUITE_ROUNDS", "25"))
COPY_ROWS = 500


class SuiteError(Exception):
    pass


def check(condition, message):
    if not condition:
        raise SuiteError(message)


def names(driver):
    """The suite's own objects, so that suites running side by side never collide: items, copy, schema, channel.
    SUITE_TAG tells a variant of the same driver's suite (over TLS) from the plain one."""
    prefix = f"drv_{driver}{os.environ.get('SUITE_TAG', '')}"
    return f"{prefix}_items", f"{prefix}_copy", f"{prefix}_schema", f"{prefix}_chan"


def copy_rows():
    """Rows for COPY, with NULLs and text that needs escaping (tab, backslash, newline, non-ASCII)."""
    rows = []
    for i in range(1, COPY_ROWS + 1):
        if i % 7 == 0:
            label = None
        elif i % 3 == 0:
            label = f"row {i}\ttab \\ backslash\nnewline ü"
        else:
            label = f"row {i}"
        rows.append((i, label, i * i))
    return rows


def check_round_trip(expected, got):
    """The rows COPY TO STDOUT returned are the rows COPY FROM STDIN wrote."""
    check(len(got) == len(expected), f"COPY TO returned {len(got)} rows, expected {len(expected)}")
    for want, have in zip(expected, got):
        check(want == have, f"COPY round trip: wrote {want!r}, read {have!r}")


def phase_failed(driver, name, error, failed):
    """Reports a failed phase; the suite goes on with the next and fails at the end."""
    traceback.print_exc()
    print(f"{driver}: {name} FAILED: {type(error).__name__}: {error}", file=sys.stderr)
    failed.append(name)


def finish(driver, version, failed, started):
    """The suite's verdict: the failed phases on stderr and 1, or one summary line and 0."""
    if failed:
        print(f"{driver} suite FAILED in: {'; '.join(failed)}", file=sys.stderr)
        return 1
    print(
        f"{driver} {version} ok: {CLIENTS} clients x {ROUNDS} prepared rounds, transactions, "
        f"search_path, LISTEN/NOTIFY, COPY {COPY_ROWS} rows both ways in {time.monotonic() - started:.1f}s"
    )
    return 0
