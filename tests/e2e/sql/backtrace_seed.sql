SELECT func, file, lineno, depth FROM python.backtrace ORDER BY depth LIMIT 10
