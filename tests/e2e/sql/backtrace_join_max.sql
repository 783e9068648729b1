SELECT max(b.func) AS top, count(*) > 0 AS rows FROM python.threads t JOIN python.backtrace b ON b.thread_id = t.thread_id
