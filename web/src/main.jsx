// The page's shell: the connection to the agent, the tabs, and what is shown when the target is
// gone or asks for a token.
import { render } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError, health, setToken, throughUiServer } from "./api.js";
import { Overview } from "./pages/overview.jsx";
import { Stacks } from "./pages/stacks.jsx";
import { Sql } from "./pages/sql.jsx";
import { Torch } from "./pages/torch.jsx";
import { Profile } from "./pages/profile.jsx";
import { Cluster } from "./pages/cluster.jsx";
import { Eval } from "./pages/eval.jsx";

const PAGES = [
  { id: "overview", title: "Overview", view: Overview },
  { id: "stacks", title: "Stacks", view: Stacks },
  { id: "sql", title: "SQL", view: Sql },
  { id: "torch", title: "Torch", view: Torch },
  { id: "profile", title: "Profile", view: Profile },
  { id: "cluster", title: "Cluster", view: Cluster },
  { id: "eval", title: "Eval", view: Eval, needsFull: true },
];

function pageFromHash(pages) {
  const id = location.hash.slice(1);
  return pages.some((p) => p.id === id) ? id : "overview";
}

function TokenForm({ refused, onToken }) {
  const input = useRef(null);
  useEffect(() => input.current && input.current.focus(), []);
  const submit = (e) => {
    e.preventDefault();
    onToken(input.current.value.trim());
  };
  return (
    <form class="token-form" onSubmit={submit}>
      <h2>This agent asks for a token</h2>
      <p>
        {refused
          ? "The agent refused that token."
          : "Give the target's PROBING_TOKEN (or its read token). It is kept in this tab only."}
      </p>
      <label>
        Token <input ref={input} type="password" autocomplete="off" spellcheck={false} />
      </label>
      <button type="submit">Connect</button>
    </form>
  );
}

function App() {
  const [info, setInfo] = useState(null); // GET /health
  const [problem, setProblem] = useState(null); // ApiError, while the agent does not answer
  const [asked, setAsked] = useState(0); // tokens tried
  const [page, setPage] = useState(() => pageFromHash(PAGES));

  useEffect(() => {
    let stopped = false;
    let timer = 0;
    const poll = async () => {
      try {
        const h = await health();
        if (stopped) return;
        setInfo(h);
        setProblem(null);
      } catch (e) {
        if (stopped) return;
        setProblem(e instanceof ApiError ? e : new ApiError(0, "Error", String(e)));
      }
      if (!stopped) timer = setTimeout(poll, 2000);
    };
    poll();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, [asked]);

  useEffect(() => {
    const onHash = () => setPage(pageFromHash(PAGES));
    addEventListener("hashchange", onHash);
    return () => removeEventListener("hashchange", onHash);
  }, []);

  const full = info && info.right === "full";
  const pages = PAGES.filter((p) => !p.needsFull || full);
  const current = pages.find((p) => p.id === page) || pages[0];

  // Alt+1 … Alt+7 switch pages.
  useEffect(() => {
    const onKey = (e) => {
      if (!e.altKey || e.ctrlKey || e.metaKey) return;
      const n = Number(e.key);
      if (n >= 1 && n <= pages.length) {
        location.hash = pages[n - 1].id;
        e.preventDefault();
      }
    };
    addEventListener("keydown", onKey);
    return () => removeEventListener("keydown", onKey);
  }, [pages.length]);

  if (problem && problem.unauthorized && !throughUiServer()) {
    return (
      <main class="center">
        <TokenForm
          refused={asked > 0}
          onToken={(t) => {
            setToken(t);
            setProblem(null); // until the agent has answered with this token
            setAsked(asked + 1);
          }}
        />
      </main>
    );
  }
  if (!info) {
    return (
      <main class="center">
        <p class={problem ? "error" : "muted"} role="status">
          {problem ? "The agent does not answer: " + problem.message : "Connecting to the agent…"}
        </p>
      </main>
    );
  }
  const View = current.view;
  return (
    <>
      <header>
        <span class="brand">probing</span>
        <span class="target" title={info.cmdline.join(" ")}>
          pid {info.pid} · {info.cmdline.slice(0, 3).join(" ")}
        </span>
        <span class={"right-badge " + info.right} title="what this page may do in the target">
          {info.right === "full" ? "full right" : "read only"}
        </span>
        <nav role="tablist" aria-label="pages">
          {pages.map((p, i) => (
            <a
              role="tab"
              href={"#" + p.id}
              aria-selected={p.id === current.id}
              title={`${p.title} (Alt+${i + 1})`}
              key={p.id}
            >
              {p.title}
            </a>
          ))}
        </nav>
      </header>
      {problem && (
        <div class="banner error" role="alert">
          {problem.gone
            ? "The target is gone, or its agent stopped answering (" + problem.message + "). Shown: what was read last."
            : problem.unauthorized
              ? "The page's secret was refused: open the URL that `probing PID ui` printed."
              : problem.message}
        </div>
      )}
      <main id={"page-" + current.id}>
        <View info={info} />
      </main>
    </>
  );
}

render(<App />, document.getElementById("app"));
