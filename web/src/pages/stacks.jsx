// Every thread's stack, read again on demand or every few seconds; a frame's locals on click;
// asyncio's tasks on demand.
import { useState } from "preact/hooks";
import { call } from "../api.js";
import { ErrorLine, shortFile, usePoll } from "../util.jsx";
import { Tasks } from "./tasks.jsx";

// A thread's waiting_for, as the CLI says it: "threading.Lock `theirs` at 0x7f48... (held by thread 1396 "loader")".
function waitingText(w) {
  const owner = w.owner != null ? `thread ${w.owner}` + (w.owner_name ? ` "${w.owner_name}"` : "") : "";
  if (w.kind === "thread_end") return `${owner || "a thread"} to end`;
  if (w.kind === "threading.Condition") return `a notify on threading.Condition at ${w.address}`;
  return `${w.kind} \`${w.expr}\` at ${w.address}` + (owner ? ` (held by ${owner})` : "");
}

const holderText = (h) => `thread ${h.thread_id}` + (h.name ? ` "${h.name}"` : "");

// A frame's key that survives a second read of a stack that went deeper or shallower meanwhile:
// counted from the outermost frame, with its function.
const frameKey = (frame, count) => count - 1 - frame.depth + "\u0000" + frame.func;

function Frame({ frame, count, locals }) {
  const [open, setOpen] = useState(false);
  const vars = locals && locals[frameKey(frame, count)];
  return (
    <li class={"frame " + (frame.frame_type === "Native" ? "native" : "")}>
      <button class="link" aria-expanded={open} onClick={() => setOpen(!open)} title="locals">
        <span class="func">{frame.func}</span>{" "}
        <span class="muted">
          {shortFile(frame.file)}:{frame.lineno}
        </span>
      </button>
      {frame.source && <code class="source">{frame.source}</code>}
      {open && (
        <dl class="locals">
          {vars && vars.length ? (
            vars.map((v) => (
              <div key={v.kind + v.name}>
                <dt>
                  {v.name}
                  {v.kind !== "local" && <span class="muted"> ({v.kind})</span>}
                </dt>
                <dd>{v.value}</dd>
              </div>
            ))
          ) : (
            <p class="muted">{locals ? "no locals (or the frame has returned since)" : "press “locals” to read them"}</p>
          )}
        </dl>
      )}
    </li>
  );
}

function Thread({ thread }) {
  const [locals, setLocals] = useState(null);
  const [error, setError] = useState(null);
  const loadLocals = async () => {
    try {
      const r = await call("GET", `/backtrace?thread=${thread.thread_id}&locals=1`);
      const t = r.threads.find((x) => x.thread_id === thread.thread_id) || r.threads[0];
      const frames = t ? t.frames : [];
      setLocals(Object.fromEntries(frames.map((f) => [frameKey(f, frames.length), f.locals || []])));
    } catch (e) {
      setError(e);
    }
  };
  return (
    <section class="thread" aria-label={"thread " + thread.name}>
      <h3>
        {thread.name} <span class="muted">tid {thread.native_thread_id}</span>{" "}
        <span class={"state " + thread.state}>{thread.state}</span>
        {thread.holds_gil && <span class="badge">holds the GIL</span>}
        {thread.waiting_for && <span class="muted"> · waiting for {waitingText(thread.waiting_for)}</span>}
        <button class="small" onClick={loadLocals}>
          locals
        </button>
      </h3>
      <ErrorLine error={error} />
      <ol class="frames">
        {thread.frames.map((f) => (
          <Frame key={f.depth} frame={f} count={thread.frames.length} locals={locals} />
        ))}
      </ol>
    </section>
  );
}

export function Stacks() {
  const [every, setEvery] = useState(0);
  const [tasks, setTasks] = useState(false);
  const [data, error, reload] = usePoll(() => call("GET", "/backtrace?all=1" + (tasks ? "&tasks=1" : "")), every * 1000, [tasks]);
  return (
    <>
      <div class="toolbar">
        <button onClick={reload}>Read again</button>
        <label>
          every{" "}
          <select value={every} onChange={(e) => setEvery(Number(e.currentTarget.value))}>
            <option value={0}>never</option>
            <option value={2}>2 s</option>
            <option value={5}>5 s</option>
          </select>
        </label>
        <label title="each event loop's tasks: where each waits, which awaits which">
          <input type="checkbox" checked={tasks} onChange={(e) => setTasks(e.currentTarget.checked)} /> asyncio tasks
        </label>
        {data && (
          <span class="muted" role="status">
            {data.threads.length} threads ·{" "}
            {data.gil_free
              ? "read without the GIL" + (data.gil_holder ? ` (${holderText(data.gil_holder)} holds it)` : "")
              : "read with the GIL"}
          </span>
        )}
      </div>
      <ErrorLine error={error} />
      {data && data.notes && data.notes.map((n) => <p class="muted">{n}</p>)}
      {data && data.threads.map((t) => <Thread key={t.thread_id} thread={t} />)}
      {data && tasks && <Tasks data={data} />}
    </>
  );
}
