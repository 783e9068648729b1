SELECT kind, mode, pos FROM process.files WHERE path LIKE '%/sql_target.py'
