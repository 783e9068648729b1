// SQL over everything the agent records: an editor that completes schemas, tables and columns,
// Ctrl-Enter to run, a grid that sorts and scrolls through 10,000 rows, downloads, a history and
// the usual questions one click away.
import { useEffect, useRef, useState } from "preact/hooks";
import { query, rows } from "../api.js";
import { Grid } from "../grid.jsx";
import { download, ErrorLine } from "../util.jsx";

const EXAMPLES = [
  ["Where is the main thread?", "SELECT func, file, lineno, depth FROM python.backtrace ORDER BY depth LIMIT 10"],
  [
    "Slowest modules, last 5 steps",
    "SELECT module, stage, avg(duration) AS avg_time, count(*) AS calls\nFROM python.torch_trace\nWHERE step > (SELECT max(step) - 5 FROM python.torch_trace)\nGROUP BY module, stage ORDER BY avg_time DESC LIMIT 10",
  ],
  [
    "Memory per step",
    "SELECT step, avg(allocated) AS avg_memory, max(allocated) AS peak_memory\nFROM python.torch_trace\nWHERE step >= (SELECT max(step) - 20 FROM python.torch_trace)\nGROUP BY step ORDER BY step",
  ],
  [
    "p99 step time per minute",
    "SELECT time_bucket('1 minute', time) AS t, percentile(duration, 0.99) AS p99, count(*) AS n\nFROM python.torch_trace WHERE stage = 'step' GROUP BY t ORDER BY t",
  ],
  ["Threads", "SELECT * FROM python.threads"],
  ["CPU and memory, last minute", "SELECT datetime(time, 'unixepoch') AS at, cpu_percent, rss_mb, threads\nFROM process.metrics WHERE time > strftime('%s', 'now') - 60 ORDER BY time DESC"],
  ["Settings", "SELECT name, value, description FROM information_schema.df_settings"],
  ["Every table", "SELECT table_schema, table_name, count(*) AS columns FROM information_schema.columns GROUP BY 1, 2"],
];
const HISTORY_KEY = "probing-sql-history";

function loadHistory() {
  try {
    return JSON.parse(localStorage.getItem(HISTORY_KEY)) || [];
  } catch {
    return [];
  }
}

const csvCell = (v) => (v === null ? "" : /[",\n]/.test(String(v)) ? '"' + String(v).replaceAll('"', '""') + '"' : String(v));

export function Sql() {
  const box = useRef(null);
  const editor = useRef(null);
  const lib = useRef(null);
  const [result, setResult] = useState(null);
  const [error, setError] = useState(null);
  const [running, setRunning] = useState(false);
  const [history, setHistory] = useState(loadHistory);

  const run = async (text) => {
    const sql = text.trim();
    if (!sql) return;
    setRunning(true);
    setError(null);
    const started = performance.now();
    try {
      const r = await query(sql, { timeoutMs: 120000 });
      setResult({ ...r, ms: performance.now() - started, sql });
      const h = [sql, ...loadHistory().filter((x) => x !== sql)].slice(0, 50);
      localStorage.setItem(HISTORY_KEY, JSON.stringify(h));
      setHistory(h);
    } catch (e) {
      setError(e);
    } finally {
      setRunning(false);
    }
  };

  useEffect(() => {
    let view = null;
    let stopped = false;
    (async () => {
      const [m, cols] = await Promise.all([
        import("../sql_editor.js"),
        rows("SELECT table_schema, table_name, column_name FROM information_schema.columns ORDER BY position").catch(() => []),
      ]);
      if (stopped) return;
      const schema = {};
      for (const c of cols) (schema[c.table_schema + "." + c.table_name] ||= []).push(c.column_name);
      lib.current = m;
      view = m.createEditor(box.current, { doc: history[0] || EXAMPLES[0][1], schema, onRun: run });
      editor.current = view;
      view.focus();
    })().catch(setError);
    return () => {
      stopped = true;
      if (view) view.destroy();
    };
  }, []);

  const put = (text) => editor.current && lib.current.setText(editor.current, text);
  const name = "probing-" + new Date().toISOString().replaceAll(":", "-").slice(0, 19);
  return (
    <>
      <div class="examples" aria-label="example queries">
        {EXAMPLES.map(([title, text]) => (
          <button class="small" key={title} onClick={() => put(text)}>
            {title}
          </button>
        ))}
      </div>
      <div class="editor" ref={box} />
      <div class="toolbar">
        <button onClick={() => editor.current && run(editor.current.state.doc.toString())} disabled={running}>
          {running ? "Running…" : "Run (Ctrl-Enter)"}
        </button>
        {history.length > 0 && (
          <label>
            history{" "}
            <select onChange={(e) => put(e.currentTarget.value)} value="">
              <option value="">…</option>
              {history.map((h) => (
                <option value={h} key={h}>
                  {h.replace(/\s+/g, " ").slice(0, 90)}
                </option>
              ))}
            </select>
          </label>
        )}
        {result && (
          <>
            <span class="muted" role="status">
              {result.rows.length} rows{result.truncated ? " (truncated)" : ""} · {result.ms.toFixed(0)} ms
            </span>
            <button
              class="small"
              onClick={() =>
                download(name + ".csv", [result.columns, ...result.rows].map((r) => r.map(csvCell).join(",")).join("\n") + "\n", "text/csv")
              }
            >
              CSV
            </button>
            <button
              class="small"
              onClick={() =>
                download(
                  name + ".json",
                  JSON.stringify(result.rows.map((r) => Object.fromEntries(result.columns.map((c, i) => [c, r[i]]))), null, 1),
                  "application/json",
                )
              }
            >
              JSON
            </button>
          </>
        )}
      </div>
      <ErrorLine error={error} />
      {result && result.notices && result.notices.map((n) => <p class="muted">{n}</p>)}
      {result && <Grid columns={result.columns} rows={result.rows} />}
    </>
  );
}
