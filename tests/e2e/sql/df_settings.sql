SELECT name, value, env FROM information_schema.df_settings WHERE name IN ('query.max_rows', 'eval.timeout_s') ORDER BY name
