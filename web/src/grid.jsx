// A result grid: sorts on a header's click (or Enter), and draws only the rows in view, so
// 10,000 rows scroll as fast as 10.
import { useMemo, useRef, useState } from "preact/hooks";

const ROW_PX = 24;
const cell = (v) => (v === null ? "NULL" : typeof v === "object" ? JSON.stringify(v) : String(v));

function compare(a, b) {
  if (a === b) return 0;
  if (a === null) return -1;
  if (b === null) return 1;
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a).localeCompare(String(b));
}

export function Grid({ columns, rows, height = 420, label = "result" }) {
  const [sort, setSort] = useState(null); // {col, dir}
  const [top, setTop] = useState(0);
  const body = useRef(null);
  const sorted = useMemo(() => {
    if (!sort) return rows;
    const out = rows.slice();
    out.sort((x, y) => sort.dir * compare(x[sort.col], y[sort.col]));
    return out;
  }, [rows, sort]);
  const first = Math.max(0, Math.floor(top / ROW_PX) - 10);
  const last = Math.min(sorted.length, first + Math.ceil(height / ROW_PX) + 20);
  const template = { gridTemplateColumns: `repeat(${columns.length}, minmax(7em, 1fr))` };
  const toggle = (i) => setSort(sort && sort.col === i ? { col: i, dir: -sort.dir } : { col: i, dir: 1 });
  return (
    <div class="grid" role="table" aria-label={label} aria-rowcount={sorted.length + 1}>
      <div class="grid-head" role="row" style={template}>
        {columns.map((c, i) => (
          <span
            role="columnheader"
            tabIndex={0}
            key={c + i}
            aria-sort={sort && sort.col === i ? (sort.dir > 0 ? "ascending" : "descending") : "none"}
            onClick={() => toggle(i)}
            onKeyDown={(e) => e.key === "Enter" && toggle(i)}
          >
            {c}
            {sort && sort.col === i ? (sort.dir > 0 ? " ▲" : " ▼") : ""}
          </span>
        ))}
      </div>
      <div
        class="grid-body"
        ref={body}
        style={{ maxHeight: height + "px" }}
        onScroll={(e) => setTop(e.currentTarget.scrollTop)}
        tabIndex={0}
      >
        <div style={{ height: sorted.length * ROW_PX + "px", position: "relative" }}>
          {sorted.slice(first, last).map((row, k) => (
            <div class="grid-row" role="row" key={first + k} style={{ ...template, top: (first + k) * ROW_PX + "px" }}>
              {row.map((v, i) => (
                <span role="cell" class={v === null ? "null" : typeof v === "number" ? "num" : ""} title={cell(v)}>
                  {cell(v)}
                </span>
              ))}
            </div>
          ))}
        </div>
      </div>
    </div>
  );
}
