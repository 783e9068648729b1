SELECT phase, count(*) AS n, sum(step) AS steps, count(loss) AS with_loss FROM python.losses GROUP BY phase ORDER BY phase
