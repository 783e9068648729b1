// The job. Under `probing cluster -t RANK ui` the page asks every rank (through that server):
// a grid of ranks coloured by state with their step, per-rank step time to spot a straggler, and
// the ranks' stacks grouped, so the rank that differs stands out. Served by one rank's agent, it
// shows what that agent knows of the job: the ranks rank 0's registry heard from.
import { useState } from "preact/hooks";
import { ApiError, call } from "../api.js";
import { ErrorLine, seconds, shortFile, usePoll } from "../util.jsx";

const STEP_TIME = `SELECT _rank, count(*) AS steps, max(step) AS last_step,
       (max(time) - min(time)) / (count(*) - 1) AS step_s
FROM python.torch_trace WHERE stage = 'step' AND time > strftime('%s', 'now') - 60
GROUP BY _rank HAVING count(*) > 1`;

// [0,1,2,4,5] -> "0-2,4-5"
export function rankRanges(ranks) {
  const sorted = [...new Set(ranks)].sort((a, b) => a - b);
  const parts = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) ++j;
    parts.push(i === j ? `${sorted[i]}` : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return (sorted.length === 1 ? "rank " : "ranks ") + parts.join(",");
}

const asObjects = (r) => r.rows.map((row) => Object.fromEntries(r.columns.map((c, i) => [c, row[i]])));

function Coverage({ answer }) {
  if (!answer) return null;
  const failed = Object.entries(answer.failed || {});
  return (
    <p class={failed.length ? "error" : "muted"} role="status">
      {answer.answered}/{answer.asked} ranks answered
      {failed.map(([rank, f]) => ` · rank ${rank} ${f.state}: ${f.reason}`)}
    </p>
  );
}

function JobView() {
  const [nodes, nodesError] = usePoll(() => call("GET", "/ui/cluster/nodes"), 5000);
  const [steps] = usePoll(() => call("POST", "/ui/cluster/query", { sql: STEP_TIME }), 5000);
  const [exact, setExact] = useState(false);
  const [stacks, stacksError, readStacks] = usePoll(() => call("GET", "/ui/cluster/backtrace" + (exact ? "?exact=1" : "")), 0, [exact]);
  const ranks = nodes ? asObjects(nodes.result) : [];
  const top = Math.max(...ranks.map((r) => (typeof r.step === "number" ? r.step : -Infinity)));
  const perRank = steps ? asObjects(steps.result).sort((a, b) => b.step_s - a.step_s) : [];
  const slowest = perRank.length ? perRank[0].step_s : 0;
  return (
    <>
      <h2>Ranks</h2>
      <ErrorLine error={nodesError} />
      <Coverage answer={nodes} />
      <div class="ranks" role="list" aria-label="ranks">
        {ranks.map((r) => {
          const behind = typeof r.step === "number" && top - r.step > 2;
          const state = r.state === "running" ? (behind ? "behind" : "alive") : "silent";
          return (
            <div role="listitem" class={"rank " + state} key={r.rank} title={`${r.host} ${r.address || ""} pid ${r.pid} — ${r.state}`}>
              <strong>{r.rank}</strong>
              <span>{r.state}</span>
              <span class="muted">
                {r.step != null ? `step ${r.step}` : "no steps"} · {r.host}
              </span>
            </div>
          );
        })}
      </div>
      <h2>Step time per rank, last minute</h2>
      {perRank.length === 0 ? (
        <p class="muted">No rank finished two steps in the last minute.</p>
      ) : (
        <table class="plain" aria-label="step time per rank">
          <tbody>
            {perRank.map((r) => (
              <tr key={r._rank}>
                <td>rank {r._rank}</td>
                <td class="num">{seconds(r.step_s)}</td>
                <td class="bar-cell">
                  <span class="hbar" style={{ width: (100 * r.step_s) / slowest + "%" }} />
                </td>
                <td class="muted">step {r.last_step}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <h2>Stacks, grouped</h2>
      <div class="toolbar">
        <button onClick={readStacks}>Read again</button>
        <label>
          <input type="checkbox" checked={exact} onChange={(e) => setExact(e.currentTarget.checked)} /> lines too
        </label>
        {stacks && (
          <span class="muted" role="status">
            {stacks.result.answered} ranks, read within {stacks.result.window_ms == null ? "–" : stacks.result.window_ms.toFixed(0) + " ms"}
          </span>
        )}
      </div>
      <ErrorLine error={stacksError} />
      {stacks &&
        stacks.result.groups.map((g) => (
          <section class="thread group" aria-label={rankRanges(g.ranks)}>
            <h3>
              {rankRanges(g.ranks)} ({g.ranks.length}) <span class="muted">thread {g.thread.name}</span>{" "}
              {g.thread.state && <span class="state">{g.thread.state}</span>}
            </h3>
            <ol class="frames">
              {g.thread.frames.map((f) => (
                <li class="frame">
                  <span class="func">{f.func}</span>{" "}
                  <span class="muted">
                    {shortFile(f.file)}
                    {f.lineno != null ? ":" + f.lineno : ""}
                  </span>
                </li>
              ))}
            </ol>
          </section>
        ))}
      {nodes && nodes.notes.map((n) => <p class="muted">{n}</p>)}
    </>
  );
}

function state(m) {
  if (m.silent === true) return "silent";
  if (m.silent === false) return "alive";
  return "unknown";
}

function AgentView({ data }) {
  if (!data.job) return <p class="muted">{data.message}</p>;
  const members = data.members || [];
  const job = data.job;
  return (
    <>
      <p>
        Rank {job.rank} of {job.world_size}
        {data.registry ? ` · registry ${data.registry}` : ""}
        {data.store ? ` · store ${data.store}` : ""} · {members.length} ranks registered
      </p>
      <div class="ranks" role="list" aria-label="ranks">
        {members.map((m) => (
          <div role="listitem" class={"rank " + state(m)} key={m.rank} title={`${m.host || m.address}:${m.port} pid ${m.pid} — ${state(m)}`}>
            <strong>{m.rank}</strong>
            <span>{m.host}</span>
            <span class="muted">pid {m.pid}</span>
          </div>
        ))}
      </div>
      <p class="muted">
        Only the registry (rank 0's agent) hears every rank; on another rank the states are unknown. Every rank's
        stacks, steps and queries: <code>probing cluster -t {data.registry || "RANK:PORT"} ui</code>.
      </p>
    </>
  );
}

export function Cluster() {
  // Which server this is: `probing cluster ui` answers /ui/cluster/...; anything else says 404.
  const [mode, modeError] = usePoll(async () => {
    try {
      await call("GET", "/ui/cluster/nodes", undefined, { timeoutMs: 15000 });
      return "job";
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) return "agent";
      throw e;
    }
  }, 0);
  const [data, error] = usePoll(() => (mode === "agent" ? call("GET", "/cluster") : Promise.resolve(null)), 3000, [mode]);
  if (modeError) return <ErrorLine error={modeError} />;
  if (!mode) return <p class="muted">Reading the job…</p>;
  if (mode === "job") return <JobView />;
  if (error) return <ErrorLine error={error} />;
  return data ? <AgentView data={data} /> : <p class="muted">Reading the job…</p>;
}
