SELECT rss_mb > 1 AS rss, peak_rss_mb >= rss_mb AS peak, system_total_mb > rss_mb AS total, system_available_mb <= system_total_mb AS avail FROM process.memory
