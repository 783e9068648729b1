"""probing's SQL functions for time series, in a real agent, against Python's own statistics on
random data (NULLs, one-row and empty groups included), and window functions over a real table."""
import json
import math
import random
import statistics

import pytest

from conftest import interpreter_params, run_cli

pytestmark = pytest.mark.parametrize("interp", interpreter_params())


def rows(pid, sql):
    rc, out, err = run_cli(pid, "query", "--format", "json", sql)
    assert rc == 0, (sql, err)
    return json.loads(out)


def values_sql(groups):
    """(VALUES ('g', x), ...) for {group: [x or None, ...]}."""
    cells = ["('%s', %s)" % (g, "NULL" if x is None else repr(x)) for g, xs in groups.items() for x in xs]
    return "(VALUES %s)" % ", ".join(cells)


def linear_percentile(xs, p):
    xs = sorted(xs)
    h = (len(xs) - 1) * p
    lo = math.floor(h)
    return xs[lo] + (h - lo) * (xs[min(lo + 1, len(xs) - 1)] - xs[lo])


def test_aggregates_match_python(interp, target_factory):
    t = target_factory("idle.py", interp)
    rnd = random.Random(42)
    groups = {"big": [rnd.gauss(10, 3) for _ in range(300)] + [None] * 5,
              "one": [2.5], "nulls": [None, None], "ints": [rnd.randint(-50, 50) for _ in range(40)]}
    got = {r["g"]: r for r in rows(t.pid,
        "SELECT column1 AS g, median(column2) AS med, percentile(column2, 0.99) AS p99, "
        "percentile(column2, 0.1) AS p10, stddev(column2) AS sd, variance(column2) AS var, "
        "stddev_pop(column2) AS sdp, variance_pop(column2) AS varp, count(column2) AS n "
        "FROM %s GROUP BY column1" % values_sql(groups))}
    assert set(got) == set(groups)
    for g, xs in groups.items():
        xs = [x for x in xs if x is not None]
        r = got[g]
        if not xs:
            assert r["med"] is None and r["sd"] is None and r["varp"] is None, r
            continue
        assert r["med"] == pytest.approx(statistics.median(xs)), (g, r)
        assert r["p99"] == pytest.approx(linear_percentile(xs, 0.99)), (g, r)
        assert r["p10"] == pytest.approx(linear_percentile(xs, 0.1)), (g, r)
        if len(xs) >= 2:
            assert r["p99"] == pytest.approx(statistics.quantiles(xs, n=100, method="inclusive")[98])
            assert r["sd"] == pytest.approx(statistics.stdev(xs)) and r["var"] == pytest.approx(statistics.variance(xs))
        else:
            assert r["sd"] is None and r["var"] is None, r  # one row: no sample deviation
        assert r["sdp"] == pytest.approx(statistics.pstdev(xs)) and r["varp"] == pytest.approx(statistics.pvariance(xs))


def test_by_rate_histogram_and_time(interp, target_factory):
    t = target_factory("idle.py", interp)
    rnd = random.Random(7)
    points = [(round(rnd.uniform(0, 100), 3), 1000 + i * 2.5) for i in range(50)]
    rnd.shuffle(points)
    sql_values = "(VALUES %s)" % ", ".join("(%r, %r)" % p for p in points)
    r = rows(t.pid, "SELECT min_by(column1, column2) AS first_v, max_by(column1, column2) AS last_v, "
                    "first(column1, column2) AS f, last(column1, column2) AS l, delta(column1, column2) AS d, "
                    "rate(column1, column2) AS rate, histogram(column1, 25) AS h FROM " + sql_values)[0]
    by_time = sorted(points, key=lambda p: p[1])
    assert r["first_v"] == r["f"] == by_time[0][0] and r["last_v"] == r["l"] == by_time[-1][0], r
    assert r["d"] == pytest.approx(by_time[-1][0] - by_time[0][0])
    assert r["rate"] == pytest.approx((by_time[-1][0] - by_time[0][0]) / (by_time[-1][1] - by_time[0][1]))
    counts = {}
    for v, _ in points:
        key = "%g" % (math.floor(v / 25) * 25)
        counts[key] = counts.get(key, 0) + 1
    assert json.loads(r["h"]) == counts
    r = rows(t.pid, "SELECT time_bucket('1 minute', 1700000059) AS m, time_bucket('5m', 1700000059) AS five, "
                    "time_bucket(0.25, 3.9) AS q, to_timestamp(0) AS epoch")[0]
    assert r == {"m": 1700000040, "five": 1699999800, "q": 3.75, "epoch": "1970-01-01 00:00:00.000000"}


def test_window_functions_over_a_recorded_table(interp, target_factory):
    # The seeds' loss-delta query and a moving average, over process.metrics (a real store).
    t = target_factory("idle.py", interp, env={"PROBING_METRICS_INTERVAL_S": "0.1"})
    import time
    time.sleep(1.2)
    got = rows(t.pid, "SELECT time, threads, time - lag(time) OVER (ORDER BY time) AS gap, "
                      "avg(threads) OVER (ORDER BY time ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS avg3 "
                      "FROM process.metrics ORDER BY time")
    assert len(got) >= 5, got
    assert got[0]["gap"] is None and all(0.05 < r["gap"] < 1 for r in got[1:]), got
    for i, r in enumerate(got):
        window = [g["threads"] for g in got[max(0, i - 2):i + 1]]
        assert r["avg3"] == pytest.approx(sum(window) / len(window))


def test_bad_arguments_say_what_is_wrong(interp, target_factory):
    t = target_factory("idle.py", interp)
    for sql, message in [("SELECT time_bucket('fortnight', 1)", "'1 minute'"),
                         ("SELECT percentile(column1, 99) FROM (VALUES (1))", "between 0 and 1"),
                         ("SELECT histogram(column1, -1) FROM (VALUES (1))", "width is a number > 0")]:
        rc, out, err = run_cli(t.pid, "query", sql)
        assert rc == 1 and message in err, (sql, err)
