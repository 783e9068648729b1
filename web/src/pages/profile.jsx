// A flamegraph of where the time went: the flight recorder's last seconds, or a recording at a
// higher rate. Click a frame to zoom into it; type to highlight functions.
import { useEffect, useMemo, useState } from "preact/hooks";
import { call } from "../api.js";
import { ErrorLine, seconds, shortFile } from "../util.jsx";

// samples [time, thread, stack_id, interval_s]; stacks {id: [[func, file, line], ...innermost first]}
function buildTree(profile) {
  const root = { name: "all", file: "", value: 0, self: 0, children: new Map() };
  const self = new Map();
  for (const [, , id, weight] of profile.samples) {
    const stack = profile.stacks[id] || [];
    root.value += weight;
    let node = root;
    for (let i = stack.length - 1; i >= 0; --i) {
      const [func, file, line] = stack[i];
      const key = func + "\u0000" + file;
      let child = node.children.get(key);
      if (!child) node.children.set(key, (child = { name: func, file, line, value: 0, self: 0, children: new Map() }));
      child.value += weight;
      node = child;
    }
    node.self += weight;
    if (stack.length) {
      const key = stack[0][0] + " (" + shortFile(stack[0][1]) + ")";
      self.set(key, (self.get(key) || 0) + weight);
    }
  }
  return { root, self: [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, 10) };
}

const ROW = 20;

function Flame({ root, search }) {
  const [focus, setFocus] = useState([]); // the path of nodes zoomed into
  const top = focus.length ? focus[focus.length - 1] : root;
  const bars = [];
  const walk = (node, x, depth, path) => {
    const width = node.value / top.value;
    if (width < 0.002) return;
    const hit = search && node.name.toLowerCase().includes(search.toLowerCase());
    bars.push(
      <button
        class={"bar" + (hit ? " hit" : "")}
        style={{ left: x * 100 + "%", width: width * 100 + "%", top: depth * ROW + "px" }}
        title={`${node.name} ${shortFile(node.file)}:${node.line || ""} — ${seconds(node.value)} (${((node.value / root.value) * 100).toFixed(1)} %)`}
        onClick={() => setFocus(node === top ? focus.slice(0, -1) : path)}
      >
        {node.name}
      </button>,
    );
    let cx = x;
    for (const child of [...node.children.values()].sort((a, b) => b.value - a.value)) {
      walk(child, cx, depth + 1, [...path, child]);
      cx += child.value / top.value;
    }
  };
  walk(top, 0, 0, focus);
  const depth = Math.max(...bars.map((b) => parseInt(b.props.style.top) / ROW)) + 1;
  return (
    <div class="flame-box">
      <div class="flame" style={{ height: depth * ROW + "px" }} role="group" aria-label="flamegraph">
        {bars}
      </div>
    </div>
  );
}

export function Profile() {
  const [last, setLast] = useState(60);
  const [mode, setMode] = useState("wall");
  const [profile, setProfile] = useState(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState("");
  const [search, setSearch] = useState("");

  const read = async (path) => {
    setError(null);
    try {
      setProfile(await call("GET", path, undefined, { timeoutMs: 60000 }));
    } catch (e) {
      setError(e);
    }
  };
  const recorder = () => read(`/profile?last=${last}&mode=${mode}`);
  const record = async () => {
    setBusy("recording 10 s at 100 Hz…");
    try {
      const s = await call("POST", "/profile", { hz: 100, seconds: 10 });
      await new Promise((r) => setTimeout(r, (s.until - s.start) * 1000 + 300));
      await read(`/profile?since=${s.start}&until=${s.until}&mode=${mode}`);
    } catch (e) {
      setError(e);
    } finally {
      setBusy("");
    }
  };
  useEffect(() => {
    recorder();
  }, [mode]);
  const tree = useMemo(() => (profile ? buildTree(profile) : null), [profile]);
  return (
    <>
      <div class="toolbar">
        <label>
          last{" "}
          <select value={last} onChange={(e) => setLast(Number(e.currentTarget.value))}>
            {[10, 60, 300].map((s) => (
              <option value={s}>{s} s</option>
            ))}
          </select>
        </label>
        <label>
          mode{" "}
          <select value={mode} onChange={(e) => setMode(e.currentTarget.value)}>
            <option value="wall">wall</option>
            <option value="cpu">on CPU</option>
            <option value="gil">holding the GIL</option>
          </select>
        </label>
        <button onClick={recorder} disabled={!!busy}>
          Flight recorder
        </button>
        <button onClick={record} disabled={!!busy}>
          Record 10 s
        </button>
        <input type="search" placeholder="highlight a function" value={search} onInput={(e) => setSearch(e.currentTarget.value)} aria-label="highlight" />
        {busy && <span role="status">{busy}</span>}
      </div>
      <ErrorLine error={error} />
      {profile && (
        <p class="muted" role="status">
          {profile.counts.kept} samples of {profile.threads.length} threads over {seconds(profile.until - profile.since)}
          {profile.notices.length ? " · " + profile.notices.join("; ") : ""}
        </p>
      )}
      {tree && tree.root.value > 0 && <Flame root={tree.root} search={search} />}
      {tree && tree.root.value === 0 && <p class="muted">No samples in this window (an idle program, or the mode keeps none).</p>}
      {tree && tree.self.length > 0 && (
        <>
          <h2>Most time in the function itself</h2>
          <table class="plain">
            <tbody>
              {tree.self.map(([name, v]) => (
                <tr key={name}>
                  <td>
                    <code>{name}</code>
                  </td>
                  <td class="num">{((v / tree.root.value) * 100).toFixed(1)} %</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
      {!profile && !error && <p class="muted">Read the flight recorder (always on, at a low rate), or record 10 s at 100 Hz.</p>}
    </>
  );
}
