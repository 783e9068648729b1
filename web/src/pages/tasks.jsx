// asyncio's tasks (GET /backtrace?tasks=1), one event loop at a time, as `probing PID backtrace
// --tasks` prints them: a task that another awaits is shown under it; sibling tasks with nothing
// under them that wait at the same place are shown once, with their count; tasks that await each
// other are shown apart.
import { shortFile } from "../util.jsx";

// tasks: [[id, coroutine, name, running, [awaited by], chain]] -> the loop's tree.
function buildTree(rows) {
  const tasks = rows.map(([id, , name, running, parents, chain]) => ({ id, name, running, parents, chain: chain || [] }));
  const byId = new Map(tasks.map((t) => [t.id, t]));
  const children = new Map();
  const roots = [];
  for (const t of tasks) {
    const awaitedBy = t.parents.filter((p) => byId.has(p) && p !== t.id);
    for (const p of awaitedBy) children.set(p, [...(children.get(p) || []), t]);
    if (!awaitedBy.length) roots.push(t);
  }
  return { tasks, children, roots };
}

const place = (t) => (t.running ? "running" : t.chain.map((f) => f.slice(0, 3).join("\u0000")).join("\u0001"));
const nameOrder = (a, b) => a.name.length - b.name.length || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

// The siblings as groups: each task with children alone, the others by place; largest first.
function groups(siblings, tree, shown) {
  const byPlace = new Map();
  const out = [];
  for (const t of siblings) {
    if (shown.has(t.id)) continue;
    if (tree.children.has(t.id)) out.push([t]);
    else byPlace.set(place(t), [...(byPlace.get(place(t)) || []), t]);
  }
  for (const g of byPlace.values()) out.push(g.sort(nameOrder));
  return out.sort((a, b) => b.length - a.length || nameOrder(a[0], b[0]));
}

// The loop's tree as nodes to draw: {group, again: [names shown above], under: [nodes]}, and the
// tasks in cycles after the roots' nodes. Laid out before drawing: what is "shown above" depends
// on the order.
function layout(tree) {
  const shown = new Set();
  const nodes = (siblings) =>
    groups(siblings, tree, shown).map((group) => {
      for (const t of group) shown.add(t.id);
      const kids = group.length === 1 ? tree.children.get(group[0].id) || [] : [];
      const again = kids.filter((k) => shown.has(k.id)).map((k) => k.name);
      return { group, again, under: nodes(kids) };
    });
  const roots = nodes(tree.roots);
  const cycles = [];
  for (const t of tree.tasks) if (!shown.has(t.id)) cycles.push(...nodes([t]));
  return { roots, cycles };
}

function Node({ node, thread, nested }) {
  const { group, again, under } = node;
  const first = group[0];
  const title =
    group.length === 1
      ? `Task "${first.name}"`
      : `${group.length} tasks (${group.slice(0, 3).map((t) => `"${t.name}"`).join(", ")}${group.length > 3 ? ", ..." : ""})`;
  return (
    <li class="task">
      {nested && <span class="muted">awaits </span>}
      <span class="func">{title}</span>{" "}
      {first.running ? (
        <span class="state running">running: the stack of thread {thread} shows where</span>
      ) : (
        <span class="muted">waiting</span>
      )}
      {!first.running && (
        <ol class="frames">
          {first.chain.map(([func, file, line, source], i) => (
            <li class="frame" key={i}>
              <span class="func">{func}</span>{" "}
              <span class="muted">
                {shortFile(file)}:{line}
              </span>
              {source && <code class="source">{source}</code>}
            </li>
          ))}
        </ol>
      )}
      {(again.length > 0 || under.length > 0) && (
        <ul class="tasks">
          {again.map((name) => (
            <li class="task muted" key={"again " + name}>
              awaits Task "{name}" (shown above)
            </li>
          ))}
          {under.map((n) => (
            <Node key={n.group[0].id} node={n} thread={thread} nested />
          ))}
        </ul>
      )}
    </li>
  );
}

function Loop({ loop, thread }) {
  const tree = buildTree(loop.tasks);
  const { roots, cycles } = layout(tree);
  const running = tree.tasks.filter((t) => t.running).length;
  return (
    <section class="thread loop" aria-label={"asyncio loop of thread " + thread}>
      <h3>
        asyncio event loop in thread {thread}{" "}
        <span class="muted">
          {tree.tasks.length} {tree.tasks.length === 1 ? "task" : "tasks"}
          {running ? `, ${running} running` : ""}
        </span>
      </h3>
      <ul class="tasks">
        {roots.map((n) => (
          <Node key={n.group[0].id} node={n} thread={thread} />
        ))}
        {cycles.length > 0 && <li class="task muted">tasks that await each other (a cycle: none of them can finish):</li>}
        {cycles.map((n) => (
          <Node key={n.group[0].id} node={n} thread={thread} />
        ))}
      </ul>
    </section>
  );
}

// The `tasks` part of a backtrace answer: each loop, the main thread's first, or why there is none.
export function Tasks({ data }) {
  if (data.tasks_error) return <p class="muted">{data.tasks_error}</p>;
  if (!data.tasks) return null;
  if (!data.tasks.asyncio) return <p class="muted">no asyncio tasks: the process has not imported asyncio</p>;
  if (!data.tasks.loops.length) return <p class="muted">no asyncio tasks: no thread is running an event loop now</p>;
  const names = new Map(data.threads.map((t, i) => [t.thread_id, [i, t.name]]));
  const order = (loop) => (names.has(loop.thread) ? names.get(loop.thread)[0] : data.threads.length);
  const loops = [...data.tasks.loops].sort((a, b) => order(a) - order(b));
  return (
    <>
      {loops.map((loop) => (
        <Loop key={loop.thread} loop={loop} thread={`${loop.thread}` + (names.has(loop.thread) ? ` "${names.get(loop.thread)[1]}"` : "")} />
      ))}
      {data.tasks.truncated && <p class="muted">the tasks were cut at 5000: the others are not shown</p>}
    </>
  );
}
