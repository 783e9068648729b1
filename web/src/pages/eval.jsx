// Python in the target's __main__, shown only with the full right. Ctrl-Enter runs; the code's
// output and value come back as the CLI's eval shows them; a long run can be interrupted.
import { useRef, useState } from "preact/hooks";
import { call } from "../api.js";

export function Eval() {
  const [log, setLog] = useState([]);
  const [running, setRunning] = useState(null); // the running eval's id
  const code = useRef(null);

  const run = async () => {
    const text = code.current.value;
    if (!text.trim()) return;
    const id = "web-" + Math.random().toString(36).slice(2);
    setRunning(id);
    let entry;
    try {
      const r = await call("POST", "/eval", { code: text, id }, { timeoutMs: 600000 });
      entry = { code: text, output: r.output, value: r.value, exception: r.exception && r.exception.traceback };
    } catch (e) {
      entry = { code: text, error: e.message };
    } finally {
      setRunning(null);
    }
    setLog((l) => [...l, entry].slice(-100));
  };
  const interrupt = () => running && call("POST", "/interrupt", { id: running }).catch(() => {});
  return (
    <>
      <p class="muted">
        Runs in the target's <code>__main__</code>, as <code>probing PID eval</code> does. Every run is audited
        (probing.audit).
      </p>
      <div class="console" aria-live="polite">
        {log.map((e, i) => (
          <div class="entry" key={i}>
            <pre class="in">{e.code}</pre>
            {e.output && <pre class="out">{e.output}</pre>}
            {e.value != null && e.value !== "None" && <pre class="value">{e.value}</pre>}
            {(e.exception || e.error) && <pre class="error">{e.exception || e.error}</pre>}
          </div>
        ))}
      </div>
      <textarea
        ref={code}
        class="code"
        rows={5}
        spellcheck={false}
        aria-label="Python code (Ctrl-Enter runs it)"
        placeholder="print(model)        — Ctrl-Enter runs it"
        onKeyDown={(e) => {
          if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
            e.preventDefault();
            run();
          }
        }}
      />
      <div class="toolbar">
        <button onClick={run} disabled={!!running}>
          {running ? "Running…" : "Run (Ctrl-Enter)"}
        </button>
        {running && <button onClick={interrupt}>Interrupt</button>}
      </div>
    </>
  );
}
