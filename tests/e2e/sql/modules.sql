SELECT name, top_level, file LIKE '%.py' AS is_source FROM python.modules WHERE name IN ('json', 'json.decoder', 'sqlite3', 'sys') ORDER BY name
