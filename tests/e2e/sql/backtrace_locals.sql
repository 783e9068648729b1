SELECT func, json_extract(locals, '$.a') AS a, json_extract(locals, '$.c') AS c, frame_type, source LIKE 'while sys.stdin.readline()%' AS src FROM python.backtrace WHERE depth = 0
