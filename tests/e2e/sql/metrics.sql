SELECT count(*) > 0 AS sampled, min(rss_mb) > 1 AS rss, min(threads) >= 2 AS threads, max(time) <= CAST(strftime('%s', 'now') AS REAL) + 1 AS recent FROM process.metrics
