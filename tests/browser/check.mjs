// Opens a file `probing profile` wrote in the tool people open it with, in headless Chromium, and
// prints what that tool shows as one JSON object on standard output (the e2e tests compare it with
// the file's own numbers):
//
//   node check.mjs speedscope FILE   speedscope's page, loaded the way `speedscope FILE` loads it;
//                                    its sandwich table (total, self, symbol) for each profile
//   node check.mjs svg FILE TERM     the SVG flamegraph: its frames, a search for TERM through its
//                                    Search button (the prompt answered), a click to zoom, Escape
//
// Exits 1 with the page's errors when the page fails to load what it was given. CHROMIUM names the
// browser (default /usr/bin/chromium).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const [kind, file, term] = process.argv.slice(2);
if (!['speedscope', 'svg'].includes(kind) || !file) {
  console.error('usage: node check.mjs speedscope FILE | svg FILE TERM');
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu'],
});
const errors = [];
const dialogs = [];
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('dialog', async (d) => {
    dialogs.push(d.message());
    if (d.type() === 'prompt') await d.accept(term);
    else await d.dismiss();  // speedscope alerts when a file does not import
  });
  const result = kind === 'speedscope' ? await speedscope(page) : await svg(page);
  if (errors.length > 0 || (kind === 'speedscope' && dialogs.length > 0)) {
    console.error('the page failed: ' + JSON.stringify({ errors, dialogs }));
    process.exitCode = 1;
  }
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}

async function speedscope(page) {
  // `speedscope FILE` writes the file as base64 into a script and opens the page with
  // #localProfilePath=SCRIPT; the page defines window.speedscope and runs the script.
  const loader = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'probing-speedscope-')), 'load.js');
  const b64 = fs.readFileSync(file).toString('base64');
  fs.writeFileSync(loader, `speedscope.loadFileFromBase64(${JSON.stringify(path.basename(file))}, ${JSON.stringify(b64)})`);
  const index = path.join(here, 'node_modules/speedscope/dist/release/index.html');
  await page.goto('file://' + index + '#localProfilePath=' + loader);
  const profiles = [];
  try {
    // The sandwich view ('3') lists every function with its total and self time.
    await page.waitForFunction(() => document.body.innerText.includes('Sandwich'), null, { timeout: 20000 });
    await page.waitForTimeout(300);
    for (let i = 0; i < 64; i++) {
      await page.keyboard.press('3');
      await page.waitForFunction(() => document.body.innerText.includes('Symbol Name'), null, { timeout: 10000 });
      const shown = await page.evaluate(() => document.body.innerText);
      // "MainThread (tid 42) (1/2)": the profile's name, then where it is among the file's
      const title = shown.split('\n')[1].replace(/ \(\d+\/\d+\)$/, '');
      if (profiles.some((p) => p.title === title)) break;  // the last one, or round to the first
      profiles.push({ title, rows: sandwich(shown) });
      await page.keyboard.press('n');  // the next profile (thread), if any
      await page.waitForTimeout(200);
    }
  } finally {
    fs.rmSync(path.dirname(loader), { recursive: true, force: true });
  }
  return { profiles };
}

// "Total\tSelf\tSymbol Name\n2.06s (86%)\n\t2.06s (86%)\n\tspin_for\n..." as rows.
function sandwich(text) {
  const after = text.slice(text.indexOf('Symbol Name') + 'Symbol Name'.length);
  const cells = after.split('\n').map((s) => s.trim()).filter((s) => s.length > 0);
  const rows = [];
  for (let i = 0; i + 2 < cells.length; i += 3) {
    const [total, self, name] = cells.slice(i, i + 3);
    rows.push({ name, total: seconds(total), total_pct: percent(total), self: seconds(self), self_pct: percent(self) });
  }
  return rows;
}

function seconds(cell) {
  const m = /^([\d.]+)\s*(ns|µs|us|ms|s|min|h)\b/.exec(cell);
  if (!m) return null;
  const scale = { ns: 1e-9, 'µs': 1e-6, us: 1e-6, ms: 1e-3, s: 1, min: 60, h: 3600 }[m[2]];
  return parseFloat(m[1]) * scale;
}

function percent(cell) {
  const m = /\(([<\d.]+)%\)/.exec(cell);
  return m ? (m[1].startsWith('<') ? 0 : parseFloat(m[1])) : null;
}

async function svg(page) {
  await page.goto('file://' + path.resolve(file));
  const frames = await page.evaluate(() => document.querySelectorAll('g.f').length);
  const total = await page.evaluate(() => (typeof TOTAL === 'number' ? TOTAL : null));
  // Search through the button, as a user does: the prompt is answered with TERM.
  await page.click('#search');
  await page.waitForFunction(() => document.getElementById('matched').textContent !== '', null, { timeout: 5000 });
  const matched = await page.evaluate(() => document.getElementById('matched').textContent);
  const highlighted = await page.evaluate(
    () => [...document.querySelectorAll('g.f rect')].filter((r) => r.getAttribute('fill') === 'rgb(230,0,230)').length);
  // A click on the widest frame that matched zooms to it: it then spans the whole width.
  const target = await page.evaluate(() => {
    let best = null;
    document.querySelectorAll('g.f').forEach((g, i) => {
      const r = g.querySelector('rect');
      if (r.getAttribute('fill') === 'rgb(230,0,230)' && (best === null || +r.getAttribute('width') > best.w)) {
        best = { i, w: +r.getAttribute('width'), label: g.getAttribute('data-l') };
      }
    });
    return best;
  });
  let zoom = null;
  if (target !== null) {
    await page.locator('g.f').nth(target.i).locator('rect').click({ force: true });
    zoom = await page.evaluate((i) => ({
      width: +document.querySelectorAll('g.f')[i].querySelector('rect').getAttribute('width'),
      unzoom_shown: document.getElementById('unzoom').style.display !== 'none',
      hidden: [...document.querySelectorAll('g.f')].filter((g) => g.style.display === 'none').length,
    }), target.i);
    zoom.label = target.label;
  }
  await page.keyboard.press('Escape');
  const after_escape = await page.evaluate(() => ({
    matched: document.getElementById('matched').textContent,
    hidden: [...document.querySelectorAll('g.f')].filter((g) => g.style.display === 'none').length,
  }));
  return { frames, total, matched, highlighted, zoom, after_escape, dialogs };
}
