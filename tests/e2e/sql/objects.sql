SELECT type, module, count, size_bytes > 0 AS sized FROM python.objects WHERE type = 'GoldenThing'
