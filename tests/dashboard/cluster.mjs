// Opens the dashboard of node A of a two-node cluster in headless Chromium and checks the
// cluster view: a row per node and the cluster's totals, picking a node shows its
// figures, a refusal on node B is counted on B's row, and after a reload the charts are
// drawn from the server's history at once. Saves a screenshot.
// Usage: node cluster.mjs <base-url> <token> <node-b-id> <screenshot.png>
import puppeteer from 'puppeteer-core';

const [base, token, nodeB, screenshot] = process.argv.slice(2);
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
const steps = [];
const rows = (page) => page.$$eval('#nodes tr', (trs) => trs.map((tr) => ({
  node: tr.dataset.node,
  cells: [...tr.querySelectorAll('td')].map((td) => td.textContent),
  picked: tr.classList.contains('picked'),
})));
let page;
try {
  page = await browser.newPage();
  await page.setViewport({ width: 1500, height: 1100 });
  await page.goto(`${base}/dashboard?token=${encodeURIComponent(token)}`);
  // Two nodes and the totals: 3 sockets on A, 2 on B, 5 in all.
  await page.waitForFunction(() => {
    const trs = [...document.querySelectorAll('#nodes tr')];
    const total = trs.find((tr) => tr.classList.contains('total'));
    return trs.length === 3 && total && total.children[5].textContent.startsWith('5 (5/');
  }, { timeout: 15000 });
  // Nothing failed (a /ready that answered 503 while a node started is not a failure).
  const failures = await page.$$eval('#nodes tr', (trs) => trs.map((tr) => tr.children[13].textContent));
  if (failures.some((f) => f !== '0')) throw new Error(`failures: ${failures}`);
  steps.push('two nodes and the totals');
  await page.waitForFunction(() => document.getElementById('connections').textContent === '5', { timeout: 5000 });
  steps.push('now shows the cluster');
  // Pick B: its figures; pick the cluster again: the totals.
  await page.click(`#nodes tr[data-node="${nodeB}"]`);
  await page.waitForFunction(() => document.getElementById('connections').textContent === '2', { timeout: 5000 });
  const scope = await page.$eval('#now-scope', (e) => e.textContent);
  if (!scope.includes(nodeB)) throw new Error(`scope: ${scope}`);
  steps.push('picked node B');
  await page.click('#nodes tr.total');
  await page.waitForFunction(() => document.getElementById('connections').textContent === '5', { timeout: 5000 });
  steps.push('picked the cluster');
  // The test sent one wrong token to B: B's row counts the 401 (its card reaches A
  // through Redis).
  await page.waitForFunction((b) => {
    const tr = document.querySelector(`#nodes tr[data-node="${b}"]`);
    return tr && tr.children[12].textContent === '1/0/0';
  }, { timeout: 10000 }, nodeB);
  steps.push('refusal counted on B');
  // A reload draws the charts from the server's history at once.
  await new Promise((r) => setTimeout(r, 2500));
  await page.reload();
  await page.waitForFunction(() => document.getElementById('status').textContent === 'live', { timeout: 10000 });
  await page.waitForFunction(() => samples.length >= 3, { timeout: 2000 });
  steps.push('charts kept across a reload');
  await page.screenshot({ path: screenshot, fullPage: true });
  steps.push('screenshot');
  console.log(JSON.stringify({ ok: true, steps, rows: await rows(page) }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, steps, error: String(e), rows: page ? await rows(page).catch(() => []) : [] }));
} finally {
  await browser.close();
}
