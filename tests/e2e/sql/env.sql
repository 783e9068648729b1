SELECT name, value FROM process.env WHERE name LIKE 'SQL\_GOLDEN%' ESCAPE '\' ORDER BY name
