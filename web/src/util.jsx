// Small pieces the pages share.
import { useEffect, useRef, useState } from "preact/hooks";

// Calls `load` now and every `everyMs` (0: once) while the page is shown, never two at once.
// Returns [data, error, reload].
export function usePoll(load, everyMs, deps = []) {
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const [tick, setTick] = useState(0);
  const busy = useRef(false);
  useEffect(() => {
    let stopped = false;
    let timer = 0;
    const run = async () => {
      if (busy.current) return;
      busy.current = true;
      try {
        const d = await load();
        if (!stopped) {
          setData(d);
          setError(null);
        }
      } catch (e) {
        if (!stopped) setError(e);
      } finally {
        busy.current = false;
      }
      if (!stopped && everyMs > 0) timer = setTimeout(run, everyMs);
    };
    run();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, [...deps, tick, everyMs]);
  return [data, error, () => setTick((t) => t + 1)];
}

export function ErrorLine({ error }) {
  if (!error) return null;
  return (
    <p class="error" role="alert">
      {error.message || String(error)}
    </p>
  );
}

export const seconds = (s) =>
  s == null ? "–" : s < 1e-3 ? (s * 1e6).toFixed(0) + " µs" : s < 1 ? (s * 1e3).toFixed(2) + " ms" : s.toFixed(2) + " s";

export function duration(s) {
  if (s == null) return "–";
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return d ? `${d} d ${h} h` : h ? `${h} h ${m} min` : m ? `${m} min ${Math.floor(s % 60)} s` : `${s.toFixed(1)} s`;
}

export const bytes = (n) =>
  n == null ? "–" : n >= 1 << 30 ? (n / 2 ** 30).toFixed(2) + " GiB" : n >= 1 << 20 ? (n / 2 ** 20).toFixed(1) + " MiB" : (n / 1024).toFixed(0) + " KiB";

// A file's last two parts: "examples/train.py".
export const shortFile = (f) => (f ? f.split("/").slice(-2).join("/") : "");

// Saves `text` as a file the browser downloads.
export function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
