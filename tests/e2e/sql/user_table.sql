SELECT step, loss, phase FROM python.losses WHERE step >= 7 ORDER BY step
