// Opens the dashboard in headless Chromium and waits until its Redis section has a row
// whose first cell is <label> and whose second cell contains <text>; prints the section's
// rows and the page's banner as JSON ({ok, rows, banner: {text, shown}}).
// Usage: node redis.mjs <base-url> <token> <label> <text>
import puppeteer from 'puppeteer-core';

const [base, token, label, text] = process.argv.slice(2);
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
const rows = async (page) => page.$$eval('#redis tr', (trs) => trs.map((tr) => ({
  cells: [...tr.querySelectorAll('td')].map((td) => td.textContent),
  down: tr.classList.contains('down'),
})));
let page;
try {
  page = await browser.newPage();
  await page.goto(`${base}/dashboard?token=${encodeURIComponent(token)}`);
  await page.waitForFunction(([label, text]) => [...document.querySelectorAll('#redis tr')].some((tr) => {
    const cells = tr.querySelectorAll('td');
    return cells.length === 2 && cells[0].textContent === label && cells[1].textContent.includes(text);
  }), { timeout: 15000 }, [label, text]);
  const banner = await page.$eval('#banner', (b) => ({ text: b.textContent, shown: b.classList.contains('shown') }));
  console.log(JSON.stringify({ ok: true, rows: await rows(page), banner }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: String(e), rows: page ? await rows(page).catch(() => []) : [] }));
} finally {
  await browser.close();
}
