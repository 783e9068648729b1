// Training as torch sees it: step time over steps, the wait for data, the slowest modules of the
// last N steps, memory per step (CUDA), and spans and events on a timeline. Every query is bounded
// to the newest steps or seconds, so the page reads no more than a user's query would.
import { useState } from "preact/hooks";
import { rows } from "../api.js";
import { Chart } from "../chart.jsx";
import { ErrorLine, seconds, usePoll } from "../util.jsx";

const LAST = "(SELECT max(step) FROM python.torch_trace)";
const STEP_TIMES = (n) => `SELECT step, time - lag(time) OVER (ORDER BY step) AS step_s, data_s, allocated, max_allocated
FROM (SELECT step, max(time) AS time,
             sum(CASE WHEN stage = 'data' THEN duration END) AS data_s,
             max(allocated) AS allocated, max(max_allocated) AS max_allocated
      FROM python.torch_trace WHERE step > ${LAST} - ${n} GROUP BY step)
ORDER BY step`;
const SLOWEST = (n) => `SELECT module, stage, avg(duration) AS avg_s, sum(duration) AS total_s, count(*) AS calls
FROM python.torch_trace
WHERE step > ${LAST} - ${n} AND stage IN ('forward', 'backward', 'step', 'data')
GROUP BY module, stage ORDER BY total_s DESC LIMIT 15`;
const SPANS = `SELECT name, start, duration, thread_id, error FROM python.spans
WHERE start > strftime('%s', 'now') - 60 ORDER BY start DESC LIMIT 500`;
const EVENTS = `SELECT time, name, thread_id FROM python.events
WHERE time > strftime('%s', 'now') - 60 ORDER BY time DESC LIMIT 500`;

function Timeline({ spans, events }) {
  if (!spans.length && !events.length) {
    return <p class="muted">No spans or events in the last minute (probing.span, probing.event).</p>;
  }
  const times = [...spans.map((s) => s.start), ...spans.map((s) => s.start + (s.duration || 0)), ...events.map((e) => e.time)];
  const t0 = Math.min(...times), t1 = Math.max(...times, t0 + 1e-3);
  const threads = [...new Set([...spans.map((s) => s.thread_id), ...events.map((e) => e.thread_id)])];
  const x = (t) => ((t - t0) / (t1 - t0)) * 100;
  const lane = 22;
  return (
    <svg class="timeline" viewBox={`0 0 100 ${threads.length * lane}`} preserveAspectRatio="none" height={threads.length * lane} role="img" aria-label="spans and events">
      {spans.map((s) => (
        <rect x={x(s.start)} width={Math.max(0.15, x(s.start + (s.duration || 0)) - x(s.start))} y={threads.indexOf(s.thread_id) * lane + 3} height={lane - 6} class={s.error ? "span failed" : "span"}>
          <title>{`${s.name}: ${seconds(s.duration)}${s.error ? " — " + s.error : ""}`}</title>
        </rect>
      ))}
      {events.map((e) => (
        <rect x={x(e.time)} width={0.25} y={threads.indexOf(e.thread_id) * lane} height={lane} class="event">
          <title>{e.name}</title>
        </rect>
      ))}
    </svg>
  );
}

export function Torch() {
  const [n, setN] = useState(200);
  const [steps, stepsError] = usePoll(() => rows(STEP_TIMES(n)), 5000, [n]);
  const [slowest, slowestError] = usePoll(() => rows(SLOWEST(Math.min(n, 20))), 5000, [n]);
  const [spans] = usePoll(() => rows(SPANS), 5000);
  const [events] = usePoll(() => rows(EVENTS), 5000);
  const s = steps || [];
  const xs = s.map((r) => r.step);
  const hasData = s.some((r) => r.data_s != null);
  const hasMemory = s.some((r) => r.allocated != null);
  if (steps && !steps.length) {
    return (
      <p class="muted">
        No torch steps recorded: the target has not imported torch, or tracing is off (the setting <code>torch.trace</code>).
      </p>
    );
  }
  return (
    <>
      <div class="toolbar">
        <label>
          last{" "}
          <select value={n} onChange={(e) => setN(Number(e.currentTarget.value))}>
            {[50, 200, 1000, 5000].map((k) => (
              <option value={k}>{k} steps</option>
            ))}
          </select>
        </label>
      </div>
      <ErrorLine error={stepsError || slowestError} />
      <div class="charts">
        <Chart
          title="Step time, ms"
          time={false}
          xs={xs}
          series={[
            { label: "step", unit: " ms", values: s.map((r) => (r.step_s == null ? null : r.step_s * 1e3)) },
            ...(hasData ? [{ label: "waiting for data", unit: " ms", values: s.map((r) => (r.data_s == null ? null : r.data_s * 1e3)) }] : []),
          ]}
        />
        {hasMemory && (
          <Chart
            title="CUDA memory per step, MiB"
            time={false}
            xs={xs}
            series={[
              { label: "allocated", unit: " MiB", values: s.map((r) => (r.allocated == null ? null : r.allocated / 2 ** 20)) },
              { label: "max allocated", unit: " MiB", values: s.map((r) => (r.max_allocated == null ? null : r.max_allocated / 2 ** 20)) },
            ]}
          />
        )}
      </div>
      <h2>Where the time goes, last {Math.min(n, 20)} steps</h2>
      {slowest && (
        <table class="plain" aria-label="slowest modules">
          <thead>
            <tr>
              <th>module</th>
              <th>stage</th>
              <th class="num">average</th>
              <th class="num">total</th>
              <th class="num">calls</th>
            </tr>
          </thead>
          <tbody>
            {slowest.map((r) => (
              <tr key={r.module + r.stage}>
                <td>
                  <code>{r.module}</code>
                </td>
                <td>{r.stage}</td>
                <td class="num">{seconds(r.avg_s)}</td>
                <td class="num">{seconds(r.total_s)}</td>
                <td class="num">{r.calls}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <h2>Spans and events, last minute</h2>
      <Timeline spans={spans || []} events={events || []} />
    </>
  );
}
