SELECT pid = {pid} AS same_pid, ppid > 0 AS has_parent, python LIKE '3.%' AS py, uptime_s > 0 AS up, cmdline LIKE '%sql_target.py' AS cmd FROM process.info
