SELECT func, file, lineno
FROM python.backtrace
WHERE depth = 0
