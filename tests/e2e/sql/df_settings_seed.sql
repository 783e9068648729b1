SELECT name, value FROM information_schema.df_settings LIMIT 5
