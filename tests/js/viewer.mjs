// Opens the desktop's VNC viewer URL (VIEWER_URL, as the API returned it) in Debian's headless
// Chromium through playwright-core, waits until noVNC has connected and drawn, and checks the
// screenshot (SHOT) is not blank. HOST_RULES (optional) is Chromium's --host-resolver-rules, for
// URLs under a domain the test's DNS does not know.
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const args = ["--no-sandbox"];
if (process.env.HOST_RULES) args.push(`--host-resolver-rules=${process.env.HOST_RULES}`);
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args });
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await page.goto(process.env.VIEWER_URL);
  // The token has moved into a cookie: the address bar no longer shows it.
  assert.ok(!page.url().includes("access_token"), page.url());
  // noVNC adds a canvas once the RFB session is up and hides its connecting status.
  await page.waitForFunction(() => {
    const c = document.querySelector("#noVNC_container canvas, canvas");
    return c && c.width > 100 && document.documentElement.classList.contains("noVNC_connected");
  }, null, { timeout: 30000 });
  await page.waitForTimeout(1000);
  const png = await page.screenshot({ path: process.env.SHOT });
  // Not blank: the canvas holds more than one colour.
  const colours = await page.evaluate(() => {
    const c = document.querySelector("canvas");
    const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    const seen = new Set();
    for (let i = 0; i < data.length; i += 4 * 97) seen.add(`${data[i]},${data[i + 1]},${data[i + 2]}`);
    return seen.size;
  });
  assert.ok(colours > 3, `the viewer shows ${colours} colours`);
  assert.ok(png.length > 5000);
  console.log(`viewer ok (${colours} colours)`);
} finally {
  await browser.close();
}
