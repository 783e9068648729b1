SELECT count(*) >= 2 AS several, sum(is_main) AS mains, max(name = 'probing-metrics') AS sampler FROM process.threads
