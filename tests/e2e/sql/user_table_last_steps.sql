SELECT phase, avg(loss) AS avg_loss FROM python.losses WHERE step > (SELECT max(step) - 3 FROM python.losses) GROUP BY phase ORDER BY phase
