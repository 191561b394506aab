// Drives the dashboard in a real headless Chromium: logs in, sees a channel appear when a
// client subscribes and the message counter move when events are published, creates and
// starts an EmitHub channel from the page, and saves a screenshot.
// Usage: node drive.mjs <base-url> <token> <screenshot.png>
import puppeteer from 'puppeteer-core';

const [base, token, screenshot] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const browser = await puppeteer.launch({
  executablePath,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
const steps = [];
const text = (page, sel) => page.$eval(sel, (e) => e.textContent);
try {
  // A wrong token is refused and the login form says so.
  const wrong = await browser.newPage();
  await wrong.goto(`${base}/dashboard?token=wrong`);
  await wrong.waitForFunction(() => document.getElementById('login-error').textContent.includes('not accepted'), { timeout: 10000 });
  steps.push('wrong token refused');
  await wrong.close();

  const page = await browser.newPage();
  await page.setViewport({ width: 1400, height: 1000 });
  // What the server answered to Chromium's permessage-deflate offer (its snapshots are
  // over the threshold, so the page only works if Chromium decodes compressed frames).
  const cdp = await page.createCDPSession();
  await cdp.send('Network.enable');
  let extensions = null;
  cdp.on('Network.webSocketHandshakeResponseReceived', (e) => {
    const h = e.response.headers;
    extensions = h['Sec-WebSocket-Extensions'] ?? h['sec-websocket-extensions'] ?? extensions;
  });
  await page.goto(`${base}/dashboard`);
  await page.waitForSelector('#login:not(.hidden)', { timeout: 10000 });
  await page.type('#token', token);
  await page.click('#login-form button');
  await page.waitForFunction(() => document.getElementById('status').textContent === 'live', { timeout: 10000 });
  steps.push('logged in');
  // Version, uptime, and the favicon the page links (the first snapshot follows 'live').
  await page
    .waitForFunction(() => /v\d+\.\d+\.\d+/.test(document.querySelector('header').textContent), { timeout: 10000 })
    .catch(() => {});
  const header = await page.$eval('header', (e) => e.textContent);
  if (!/v\d+\.\d+\.\d+/.test(header) || !/up \d/.test(header)) throw new Error(`header without version and uptime: ${header}`);
  const icon = await page.evaluate(async () => (await fetch('/favicon.ico')).headers.get('content-type'));
  if (icon !== 'image/svg+xml') throw new Error(`favicon: ${icon}`);
  steps.push('version, uptime, favicon');
  // Chromium agreed to compression, and the snapshots it receives are over the
  // threshold: the compression figure shows how much smaller they went.
  await page.waitForFunction(() => / % smaller$/.test(document.getElementById('compression').textContent), { timeout: 10000 });
  steps.push(`compression ${await text(page, '#compression')}`.replace(/\d+ %/, 'N %'));

  // A client subscribes (a WebSocket of the browser itself): the channel appears.
  await page.evaluate((wsBase) => { window.demo = new WebSocket(`${wsBase}/ws?channel=dash-demo`); }, base.replace('http', 'ws'));
  await page.waitForFunction(() => [...document.querySelectorAll('#channels td')].some((td) => td.textContent === 'dash-demo'), { timeout: 10000 });
  steps.push('channel appeared');

  // Events published: the counter moves.
  const before = Number(await text(page, '#published'));
  await page.evaluate(async (t) => {
    for (let i = 0; i < 3; i++) {
      await fetch('/api/broadcast', { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${t}` }, body: JSON.stringify({ channel: 'dash-demo', event: 'tick', data: { i } }) });
    }
  }, token);
  await page.waitForFunction((b) => Number(document.getElementById('published').textContent) >= b + 3, { timeout: 10000 }, before);
  steps.push('counter moved');
  // Look the channel up and send it a test event from the page: the page's own socket
  // (window.demo) receives it.
  await page.evaluate(() => { window.got = []; window.demo.onmessage = (m) => window.got.push(JSON.parse(m.data)); });
  await page.type('#lookup-name', 'dash-demo');
  await page.click('#lookup-form button');
  await page.waitForFunction(() => [...document.querySelectorAll('#lookup-facts td')].some((td) => td.textContent === 'subscribers (this node)'), { timeout: 10000 });
  await page.click('#send-form button');
  await page.waitForFunction(() => window.got.some((m) => m.event === 'dashboard.test' && m.data.from === 'dashboard'), { timeout: 10000 });
  // The page's answer is a result, not shown as an error.
  await page.waitForFunction(() => document.getElementById('lookup-error').textContent.startsWith('sent to 1 socket'), { timeout: 10000 });
  if (await page.$eval('#lookup-error', (e) => e.classList.contains('error'))) throw new Error('the send answer is styled as an error');
  steps.push('looked up and sent');
  // Apps with their figures.
  await page.waitForFunction(() => document.querySelectorAll('#apps tr').length > 0, { timeout: 10000 });
  steps.push('apps listed');

  // An EmitHub channel created and started from the page.
  await page.type('#new-name', 'Queue System');
  await page.click('#create-form button');
  await page.waitForSelector('#emithub tr[data-name="Queue System"]', { timeout: 10000 });
  const status = () => page.$eval('#emithub tr[data-name="Queue System"] td:nth-child(2)', (e) => e.textContent);
  const created = await status();
  await page.click('#emithub tr[data-name="Queue System"] button[data-action="start"]');
  await page.waitForFunction(() => document.querySelector('#emithub tr[data-name="Queue System"] td:nth-child(2)').textContent === 'Active', { timeout: 10000 });
  steps.push(`emithub ${created} -> ${await status()}`);

  await new Promise((r) => setTimeout(r, 1500)); // a few chart points
  await page.screenshot({ path: screenshot, fullPage: true });
  steps.push('screenshot');
  console.log(JSON.stringify({ ok: true, steps, extensions }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, steps, error: String(e) }));
} finally {
  await browser.close();
}
