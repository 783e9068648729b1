"""A target with known state for the SQL tests (tests/e2e/test_query.py and the golden queries
in tests/e2e/sql/): a recorded table, known objects, a named daemon thread, an open file, and
the main thread parked in leaf() with known locals. Its own sqlite3 (the system library) keeps
working beside the agent's: it runs a query in a loop and the tests read the count."""
import json  # noqa: F401 - python.modules is checked for it
import os
import sqlite3
import sys
import threading

import probing

probing.init()

losses = probing.table("losses")
for step in range(10):
    row = {"step": step, "loss": round(1.0 / (step + 1), 4), "phase": "eval" if step % 3 == 0 else "train"}
    if step == 9:
        del row["loss"]  # a missing column is NULL
    losses.append(row)


class GoldenThing:
    def __init__(self, i):
        self.i = i


things = [GoldenThing(i) for i in range(1234)]
own_source = open(__file__)

db = sqlite3.connect(":memory:")
db.execute("CREATE TABLE counts(n INTEGER)")
db.execute("INSERT INTO counts VALUES (0)")
sqlite_rounds = 0


def worker(stop):
    stop.wait()


threading.Thread(target=worker, args=(threading.Event(),), name="sql-worker", daemon=True).start()


def leaf(a, b):
    c = a + b
    global sqlite_rounds
    print("ready", flush=True)
    while sys.stdin.readline():  # SQL_LEAF_LINE: each line runs one round of the target's sqlite3
        db.execute("UPDATE counts SET n = n + 1")
        sqlite_rounds = db.execute("SELECT n FROM counts").fetchone()[0]
        print("rounds", sqlite_rounds, flush=True)
    return c


def middle():
    return leaf(1, 2)  # SQL_MIDDLE_LINE


middle()  # SQL_MODULE_LINE
