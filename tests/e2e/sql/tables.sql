SELECT table_schema, table_name, kind FROM information_schema.tables WHERE table_schema IN ('process', 'python') ORDER BY table_schema, table_name
