SELECT name, daemon, is_main, depth > 0 AS has_frames FROM python.threads ORDER BY is_main DESC, name
