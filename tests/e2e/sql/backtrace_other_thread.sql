SELECT b.func, t.name FROM python.threads t JOIN python.backtrace b ON b.thread_id = t.thread_id WHERE t.name = 'sql-worker' AND b.depth = 0
