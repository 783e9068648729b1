// The job this process is a rank of: every rank the registry knows, coloured by whether it still
// answers. (`probing cluster -t RANK backtrace|query` asks every rank at once.)
import { call } from "../api.js";
import { ErrorLine, usePoll } from "../util.jsx";

function state(m) {
  if (m.silent === true) return "silent";
  if (m.silent === false) return "alive";
  return "unknown";
}

export function Cluster() {
  const [data, error] = usePoll(() => call("GET", "/cluster"), 3000);
  if (error) return <ErrorLine error={error} />;
  if (!data) return <p class="muted">Reading the job…</p>;
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
        Only the registry (rank 0's agent) hears every rank; on another rank the states are unknown. Grouped
        stacks and per-rank queries: <code>probing cluster -t {data.registry || "RANK0:PORT"} backtrace</code>.
      </p>
    </>
  );
}
