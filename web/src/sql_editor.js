// The SQL editor (CodeMirror), in a chunk of its own: loaded when the SQL page first opens.
import { EditorView, basicSetup } from "codemirror";
import { keymap } from "@codemirror/view";
import { Prec } from "@codemirror/state";
import { sql, SQLite } from "@codemirror/lang-sql";

// The nonce the agent put in this page's Content-Security-Policy: CodeMirror's own styles are
// inline, and allowed by it alone.
const nonce = document.querySelector('meta[name="probing-csp-nonce"]')?.content || "";

// parent: the element to fill; schema: {"python.backtrace": ["func", ...]}; onRun(text).
export function createEditor(parent, { doc, schema, onRun }) {
  const run = (view) => {
    onRun(view.state.doc.toString());
    return true;
  };
  return new EditorView({
    doc,
    parent,
    extensions: [
      basicSetup,
      sql({ dialect: SQLite, schema, upperCaseKeywords: true }),
      Prec.highest(keymap.of([{ key: "Mod-Enter", run }, { key: "Shift-Enter", run }])),
      EditorView.cspNonce.of(nonce),
      EditorView.contentAttributes.of({ "aria-label": "SQL (Ctrl-Enter runs it)" }),
      EditorView.lineWrapping,
    ],
  });
}

export function setText(view, text) {
  view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text } });
  view.focus();
}
