SELECT func, lineno
FROM python.backtrace
WHERE depth < 5
