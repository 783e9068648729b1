// The process at a glance: what runs, for how long, its CPU and memory over time, the training
// step rate, and the agent's own state and settings.
import { call, rows } from "../api.js";
import { Chart } from "../chart.jsx";
import { duration, ErrorLine, usePoll } from "../util.jsx";

const METRICS = `SELECT time, cpu_percent, rss_mb FROM process.metrics
WHERE time > strftime('%s', 'now') - 600 ORDER BY time`;
const STEPS = `SELECT count(*) AS steps, max(step) AS last, max(time) - min(time) AS span
FROM python.torch_trace WHERE stage = 'step' AND time > strftime('%s', 'now') - 60`;

function Fact({ name, children }) {
  return (
    <div class="fact">
      <dt>{name}</dt>
      <dd>{children}</dd>
    </div>
  );
}

export function Overview({ info }) {
  const [torch] = usePoll(() => rows("SELECT version FROM python.modules WHERE name = 'torch'"), 0);
  const [metrics, metricsError] = usePoll(() => rows(METRICS), 5000);
  const [steps] = usePoll(() => rows(STEPS), 5000);
  const [config, configError] = usePoll(() => call("GET", "/config"), 0);
  const s = steps && steps[0];
  const rate = s && s.steps > 1 && s.span > 0 ? ((s.steps - 1) / s.span).toFixed(2) + " steps/s" : "no steps in the last minute";
  const xs = metrics ? metrics.map((m) => m.time) : [];
  return (
    <>
      <section class="facts" aria-label="process">
        <dl>
          <Fact name="process">
            pid {info.pid} · <code>{info.cmdline.join(" ")}</code>
          </Fact>
          <Fact name="Python">{info.python || info.python_status}</Fact>
          <Fact name="torch">{torch ? (torch[0] ? torch[0].version : "not imported") : "…"}</Fact>
          <Fact name="uptime">{duration(info.uptime_s)} (agent)</Fact>
          <Fact name="training">
            {rate}
            {s && s.last != null ? ` · step ${s.last}` : ""}
          </Fact>
          <Fact name="agent">
            {info.agent_version} · Python {info.python_status} · sampler{" "}
            {info.sampler && info.sampler.running ? `${info.sampler.hz} Hz` : "off"}
            {info.remote ? ` · TCP ${info.remote}` : ""}
          </Fact>
        </dl>
      </section>
      <ErrorLine error={metricsError} />
      <div class="charts">
        <Chart title="CPU, % of one core (10 min)" xs={xs} series={[{ label: "cpu", unit: " %", values: metrics ? metrics.map((m) => m.cpu_percent) : [] }]} />
        <Chart title="Resident memory, MB (10 min)" xs={xs} series={[{ label: "rss", unit: " MB", values: metrics ? metrics.map((m) => m.rss_mb) : [] }]} />
      </div>
      <section aria-label="settings">
        <h2>Settings</h2>
        <ErrorLine error={configError} />
        {config && (
          <table class="plain">
            <thead>
              <tr>
                <th>name</th>
                <th>value</th>
                <th>meaning</th>
              </tr>
            </thead>
            <tbody>
              {config.settings.map((x) => (
                <tr key={x.name} class={x.value !== x.default ? "changed" : ""}>
                  <td>
                    <code>{x.name}</code>
                  </td>
                  <td>{x.value}</td>
                  <td class="muted">{x.description}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
    </>
  );
}
