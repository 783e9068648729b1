SELECT func, file, lineno, depth
FROM python.backtrace
ORDER BY depth;
