SELECT column_name, type FROM information_schema.columns WHERE table_schema = 'python' AND table_name = 'backtrace' ORDER BY position
