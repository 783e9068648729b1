// Builds the page into OUT_DIR: index.html, and assets/ with the bundled scripts (the SQL editor
// in a chunk of its own, loaded when a page needs it) and one stylesheet. Run by the build
// (src/server/CMakeLists.txt), which then embeds OUT_DIR in the agent.
//   node build.mjs OUT_DIR
import * as esbuild from "esbuild";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2];
if (!out) {
  console.error("usage: node build.mjs OUT_DIR");
  process.exit(2);
}
rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, "assets"), { recursive: true });

await esbuild.build({
  entryPoints: { app: join(here, "src/main.jsx") },
  outdir: join(out, "assets"),
  bundle: true,
  splitting: true,
  format: "esm",
  minify: true,
  target: ["chrome100", "firefox100", "safari15"],
  jsx: "automatic",
  jsxImportSource: "preact",
  chunkNames: "[name]-[hash]",
  legalComments: "none",
  logLevel: "warning",
});
await esbuild.build({
  entryPoints: { app: join(here, "src/style.css") },
  outdir: join(out, "assets"),
  bundle: true,
  minify: true,
  logLevel: "warning",
});
copyFileSync(join(here, "src/index.html"), join(out, "index.html"));
