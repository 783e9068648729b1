// Drives probing's web page in headless Chromium against a live target and prints what each page
// showed as one JSON object on standard output (tests/e2e/test_ui.py checks it):
//
//   node ui_check.mjs URL OUT_DIR [--token TOKEN] [--sql SQL]
//   node ui_check.mjs URL OUT_DIR --gone      prints {"loaded": true} once the page shows the
//                                             target, then waits (30 s) for the page to say the
//                                             target is gone, and prints what it said
//   node ui_check.mjs URL OUT_DIR --tasks     the Stacks page with "asyncio tasks" ticked: each
//                                             loop's heading and its task lines, as text
//   node ui_check.mjs URL OUT_DIR --stacks    the Stacks page: each thread's heading, as text
//
// It opens URL (the agent's own page, or the one `probing PID ui` printed), answers the token
// prompt when one is shown, visits every page in its tab order, types SQL in the SQL page's editor
// and runs it with Ctrl-Enter, and writes a screenshot of each page (light, and the Overview in
// dark) into OUT_DIR. Any script error, failed request of the page's own files or
// Content-Security-Policy violation is reported in "errors". CHROMIUM names the browser.
import fs from 'node:fs';
import path from 'node:path';

import { chromium } from 'playwright-core';

const args = process.argv.slice(2);
const [url, outDir] = args;
const option = (name) => (args.indexOf(name) >= 0 ? args[args.indexOf(name) + 1] : null);
const token = option('--token');
const sql = option('--sql') || 'SELECT func, lineno FROM python.backtrace ORDER BY depth';
if (!url || !outDir) {
  console.error('usage: node ui_check.mjs URL OUT_DIR [--token TOKEN] [--sql SQL]');
  process.exit(2);
}
fs.mkdirSync(outDir, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu'],
});
const result = { errors: [], pages: {}, requests: [] };
try {
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 }, colorScheme: 'light' });
  const page = await context.newPage();
  page.on('pageerror', (e) => result.errors.push('script: ' + e.message));
  // API answers of 401, 403 and 404 are expected (the token form, a read token, the Cluster page
  // asking whether this is `probing cluster ui`); a page file that fails to load is not.
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) result.errors.push('console: ' + m.text());
  });
  page.on('response', (r) => {
    if (r.status() >= 400 && ['document', 'script', 'stylesheet', 'image'].includes(r.request().resourceType())) {
      result.errors.push(`file: ${r.status()} ${r.url()}`);
    }
  });
  page.on('request', (r) => {
    const h = r.headers();
    result.requests.push({ method: r.method(), url: r.url(), authorization: !!h.authorization, secret: !!h['x-probing-ui-secret'] });
  });
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      console.error('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI);
    });
  });
  await page.goto(url);
  result.url_after_load = page.url();
  const first = await page.waitForSelector('header, .token-form, .center p', { timeout: 15000 });
  if (token !== null || (await page.$('.token-form'))) {
    result.token_form = true;
    if (token === null) {
      console.log(JSON.stringify(result));
      process.exit(0);
    }
    await page.fill('.token-form input', token);
    await page.press('.token-form input', 'Enter');
    // Either the pages, or the form again saying the token was refused.
    await page.waitForFunction(
      () => document.querySelector('header') || /refused/.test(document.querySelector('.token-form p')?.textContent || ''),
      null,
      { timeout: 10000 },
    );
    if (!(await page.$('header'))) {
      result.token_refused = await page.textContent('.token-form p');
      console.log(JSON.stringify(result));
      process.exit(0);
    }
  }
  void first;
  await page.waitForSelector('header', { timeout: 15000 });
  if (args.includes('--gone')) {
    console.log(JSON.stringify({ loaded: true }));
    await page.waitForSelector('.banner.error', { timeout: 30000 });
    result.gone = await page.textContent('.banner.error');
    await page.screenshot({ path: path.join(outDir, 'ui-gone.png') });
    console.log(JSON.stringify(result));
    process.exit(0);
  }
  if (args.includes('--stacks')) {
    await page.click('nav a[href="#stacks"]');
    await page.waitForSelector('.thread .func');
    result.threads = await page.$$eval('.thread h3', (hs) => hs.map((h) => h.textContent));
    console.log(JSON.stringify(result));
    process.exit(0);
  }
  if (args.includes('--tasks')) {
    await page.click('nav a[href="#stacks"]');
    await page.waitForSelector('.thread .func');
    await page.check('.toolbar input[type=checkbox]');
    await page.waitForSelector('.loop .task', { timeout: 10000 });
    result.loops = await page.$$eval('.loop', (ls) =>
      ls.map((l) => ({
        heading: l.querySelector('h3').textContent,
        // Each task line: its own text, without that of the frames and tasks under it.
        tasks: [...l.querySelectorAll('.task')].map((t) =>
          [...t.childNodes].filter((c) => !(c.matches && c.matches('ol, ul'))).map((c) => c.textContent).join('').trim()),
        frames: [...l.querySelectorAll('.task .frame .func')].map((f) => f.textContent),
      })),
    );
    await (await page.$('.loop')).screenshot({ path: path.join(outDir, 'ui-tasks.png') });
    console.log(JSON.stringify(result));
    process.exit(0);
  }
  result.header = await page.textContent('header');
  result.tabs = await page.$$eval('nav a', (as) => as.map((a) => a.textContent));

  // Overview: the facts, and the charts once the metrics arrived.
  await page.waitForFunction(() => document.querySelectorAll('.fact').length >= 5);
  await page.waitForSelector('table.plain tbody tr');
  await page.waitForTimeout(500);
  result.pages.overview = {
    facts: await page.$$eval('.fact', (fs) => Object.fromEntries(fs.map((f) => [f.querySelector('dt').textContent, f.querySelector('dd').textContent]))),
    charts: await page.$$eval('.chart canvas', (cs) => cs.length),
    settings: await page.$$eval('table.plain tbody tr', (rs) => rs.length),
  };
  await page.screenshot({ path: path.join(outDir, 'ui-overview.png') });
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.waitForTimeout(300);
  await page.screenshot({ path: path.join(outDir, 'ui-overview-dark.png') });
  await page.emulateMedia({ colorScheme: 'light' });

  // Stacks: every thread's functions; a frame's locals on click.
  await page.click('nav a[href="#stacks"]');
  await page.waitForSelector('.thread .func');
  const funcs = await page.$$eval('.thread .func', (fs) => fs.map((f) => f.textContent));
  await page.click('.thread button.small');  // the first thread's locals
  await page.click('.thread .frame:last-child button.link');  // of its outermost frame
  await page.waitForSelector('.locals dt', { timeout: 10000 });
  result.pages.stacks = {
    threads: await page.$$eval('.thread h3', (hs) => hs.map((h) => h.textContent)),
    funcs,
    locals: await page.$$eval('.locals dt', (ds) => ds.map((d) => d.textContent)),
    status: await page.textContent('.toolbar [role=status]'),
  };
  await page.screenshot({ path: path.join(outDir, 'ui-stacks.png') });

  // SQL: typed into the editor, completion offered, run with Ctrl-Enter.
  await page.click('nav a[href="#sql"]');
  await page.waitForSelector('.cm-content');
  await page.click('.cm-content');
  await page.keyboard.press('Control+a');
  await page.keyboard.press('Delete');
  await page.keyboard.type('SELECT * FROM python.thr');
  let completions = [];
  try {
    await page.waitForSelector('.cm-tooltip-autocomplete li', { timeout: 5000 });
    completions = await page.$$eval('.cm-tooltip-autocomplete li', (ls) => ls.map((l) => l.textContent));
  } catch {}
  await page.keyboard.press('Escape');
  await page.keyboard.press('Control+a');
  await page.keyboard.press('Delete');
  await page.keyboard.type(sql);
  await page.keyboard.press('Control+Enter');
  await page.waitForSelector('.grid-row, #page-sql .error', { timeout: 20000 });
  result.pages.sql = {
    completions,
    columns: await page.$$eval('.grid-head span', (s) => s.map((x) => x.textContent)),
    rows: await page.$$eval('.grid-row', (rs) => rs.map((r) => [...r.children].map((c) => c.textContent))),
    status: await page.$eval('#page-sql [role=status]', (s) => s.textContent).catch(() => null),
    error: await page.$eval('#page-sql .error', (e) => e.textContent).catch(() => null),
  };
  await page.screenshot({ path: path.join(outDir, 'ui-sql.png') });
  // 10,000 rows (query.max_rows): the grid draws only what is in view; the last row scrolls in.
  await page.click('.cm-content');
  await page.keyboard.press('Control+a');
  await page.keyboard.press('Delete');
  await page.keyboard.type('WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 9999) SELECT i, i * i AS sq FROM n');
  await page.keyboard.press('Control+Enter');
  await page.waitForFunction(() => /^10000 rows/.test(document.querySelector('#page-sql [role=status]')?.textContent || ''), null, { timeout: 20000 });
  const drawn = await page.$$eval('.grid-row', (rs) => rs.length);
  await page.$eval('.grid-body', (b) => { b.scrollTop = b.scrollHeight; });
  await page.waitForTimeout(300);
  const lastCells = await page.$$eval('.grid-row', (rs) => rs.map((r) => r.children[0].textContent));
  result.pages.sql.big = { drawn, last: lastCells[lastCells.length - 1], status: await page.textContent('#page-sql [role=status]') };

  // Torch: the step time chart and the slowest modules.
  await page.click('nav a[href="#torch"]');
  await page.waitForSelector('#page-torch .chart canvas, #page-torch p.muted', { timeout: 15000 });
  await page.waitForTimeout(800);
  result.pages.torch = {
    charts: await page.$$eval('#page-torch .chart figcaption', (c) => c.map((x) => x.textContent)),
    modules: await page.$$eval('#page-torch table.plain tbody tr', (rs) => rs.map((r) => [...r.children].map((c) => c.textContent))),
    note: await page.$eval('#page-torch > p.muted', (p) => p.textContent).catch(() => null),
  };
  await page.screenshot({ path: path.join(outDir, 'ui-torch.png') });

  // Profile: the flight recorder's flamegraph.
  await page.click('nav a[href="#profile"]');
  await page.waitForSelector('.flame .bar, #page-profile p.muted', { timeout: 20000 });
  await page.waitForTimeout(500);
  result.pages.profile = {
    bars: await page.$$eval('.flame .bar', (bs) => bs.map((b) => b.textContent)),
    status: await page.$eval('#page-profile [role=status]', (s) => s.textContent).catch(() => null),
  };
  await page.screenshot({ path: path.join(outDir, 'ui-profile.png') });

  // Cluster: the job's ranks (under `probing cluster ui`: every rank asked, stacks grouped).
  await page.click('nav a[href="#cluster"]');
  await page.waitForFunction(() => {
    const p = document.querySelector('#page-cluster');
    return p && p.textContent && !p.textContent.includes('Reading the job') &&
      (!document.querySelector('#page-cluster .ranks') || document.querySelector('#page-cluster .group') ||
       document.querySelector('#page-cluster .error'));
  }, null, { timeout: 30000 });
  await page.waitForTimeout(500);
  result.pages.cluster = {
    text: await page.textContent('#page-cluster'),
    ranks: await page.$$eval('#page-cluster .rank', (rs) => rs.map((r) => ({ cls: r.className, text: r.textContent }))),
    groups: await page.$$eval('#page-cluster .group h3', (hs) => hs.map((h) => h.textContent)),
    coverage: await page.$eval('#page-cluster [role=status]', (s) => s.textContent).catch(() => null),
  };
  await page.screenshot({ path: path.join(outDir, 'ui-cluster.png'), fullPage: true });

  // Eval, where the page has the full right.
  if (result.tabs.includes('Eval')) {
    await page.click('nav a[href="#eval"]');
    await page.fill('textarea.code', 'print("from the page", 6 * 7)');
    await page.press('textarea.code', 'Control+Enter');
    await page.waitForSelector('.console .out, .console .error', { timeout: 20000 });
    result.pages.eval = { output: await page.textContent('.console') };
    await page.screenshot({ path: path.join(outDir, 'ui-eval.png') });
  }
} catch (e) {
  result.errors.push('check: ' + e.message);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
