SELECT func, file, lineno FROM python.backtrace ORDER BY depth LIMIT 3
