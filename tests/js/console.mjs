// The web console in Debian's headless Chromium through playwright-core, as a person uses it:
// a refused key, sign-in, create, terminal echo, file upload then download, a background
// process's output, extend, pause and resume, the list with live usage, templates and a build
// log, keys (create, rotate, revoke), secrets (stored, listed, deleted), volumes (made, listed,
// deleted), the audit trail filtered, another tenant's sandbox
// refused, kill, sign-out, and a member key's narrower console. Each page's screenshot goes to
// SHOTS and must not be blank.
//
// Env: BASE_URL, ADMIN_KEY (tenant A, admin), MEMBER_KEY (tenant B, member), OTHER_SANDBOX
// (tenant B's sandbox), BUILT_TEMPLATE (a template tenant A built), SHOTS (a directory).
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { chromium } from "playwright-core";

const { BASE_URL, ADMIN_KEY, MEMBER_KEY, OTHER_SANDBOX, BUILT_TEMPLATE, SHOTS } = process.env;
const CONSOLE = `${BASE_URL}/console/`;

/** Saves a screenshot and checks it is not blank: many colours, in the page's own words. */
async function shot(page, name) {
  await page.waitForTimeout(300);
  const png = await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
  const colours = await page.evaluate(async (b64) => {
    const img = new Image();
    img.src = `data:image/png;base64,${b64}`;
    await img.decode();
    const c = document.createElement("canvas");
    c.width = img.width;
    c.height = img.height;
    const g = c.getContext("2d");
    g.drawImage(img, 0, 0);
    const data = g.getImageData(0, 0, c.width, c.height).data;
    const seen = new Set();
    for (let i = 0; i < data.length; i += 4 * 31) seen.add(`${data[i]},${data[i + 1]},${data[i + 2]}`);
    return seen.size;
  }, png.toString("base64"));
  const words = (await page.locator("body").innerText()).trim().length;
  assert.ok(colours > 8 && words > 40, `${name}: ${colours} colours, ${words} characters of text`);
  console.log(`screenshot ${name}.png: ${colours} colours, ${words} characters`);
}

async function signIn(page, key) {
  await page.goto(CONSOLE);
  await page.getByLabel("API key").fill(key);
  await page.getByRole("button", { name: "Sign in" }).click();
}

/** Everything after the terminal, on the sandbox `id` the console created. */
async function theRest(page, context, id, seenUrls) {
  // Files: upload a binary file, see it listed, download it back byte for byte.
  await page.getByTestId("tab-files").click();
  const bytes = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7 + 3) % 256));
  await page.getByTestId("upload").setInputFiles({ name: "from-browser.bin", mimeType: "application/octet-stream", buffer: bytes });
  const row = page.locator('[data-file="from-browser.bin"]');
  await row.waitFor({ timeout: 15000 });
  const [download] = await Promise.all([page.waitForEvent("download"), row.getByTestId("download").click()]);
  assert.equal(download.suggestedFilename(), "from-browser.bin");
  assert.ok(Buffer.compare(await readFile(await download.path()), bytes) === 0, "the download is the upload");
  await shot(page, "03-sandbox-files");

  // A background process and its output.
  await page.getByTestId("tab-processes").click();
  await page.getByLabel("Background command").fill("for i in 1 2 3; do echo tick-$i; done; sleep 60");
  await page.getByTestId("start-process").click();
  await page.getByTestId("process-stdout").filter({ hasText: "tick-3" }).waitFor({ timeout: 15000 });
  await shot(page, "04-sandbox-processes");

  // Extend by ten minutes (created with 60), then pause and resume from the page.
  const expiresIn = () =>
    page.evaluate(async (sid) => {
      const r = await fetch(`/v1/sandboxes/${sid}`, { headers: { "X-API-Key": sessionStorage.getItem("warren.apiKey") } });
      return (Date.parse((await r.json()).expires_at) - Date.now()) / 60000;
    }, id);
  assert.ok((await expiresIn()) < 61);
  await page.getByTestId("extend").first().click();
  await page.waitForFunction(() => document.querySelector('[data-testid="sandbox-facts"]').innerText.includes("in 1h"));
  assert.ok((await expiresIn()) > 68, "extended by ten minutes");
  await page.getByTestId("pause").first().click();
  await page.getByTestId("sandbox-facts").getByText("paused").waitFor({ timeout: 30000 });
  await page.getByText("resume it to use its terminal").waitFor();
  await page.getByTestId("resume").first().click();
  await page.getByTestId("sandbox-facts").getByText("running").waitFor({ timeout: 30000 });
  await page.getByTestId("tab-terminal").waitFor();

  // The list: the sandbox, running, with its memory as its agent reports it.
  await page.getByTestId("nav-sandboxes").click();
  const listed = page.locator(`[data-sandbox="${id}"]`);
  await listed.getByText("running").waitFor();
  await listed.getByText(/ MiB \//).or(listed.getByText(/KiB \//)).first().waitFor({ timeout: 15000 });
  await shot(page, "05-sandboxes");

  // Templates, and the build log of the one this organization built.
  await page.getByTestId("nav-templates").click();
  await page.locator('[data-template="code-interpreter"]').waitFor();
  await page.locator(`[data-template="${BUILT_TEMPLATE}"]`).getByTestId("build-logs").click();
  await page.getByTestId("build-log").filter({ hasText: "built-for-the-console" }).waitFor();
  await shot(page, "06-templates");

  // Keys: create one (shown once), rotate it, revoke the new one.
  await page.getByTestId("nav-keys").click();
  await page.getByTestId("key-name").fill("made-in-console");
  await page.getByTestId("create-key").click();
  const fresh = await page.getByTestId("fresh-key").locator("code").innerText();
  assert.match(fresh, /^wrn_/);
  const made = page.locator('[data-key="made-in-console"]').first();
  await made.waitFor();
  assert.ok(!(await made.innerText()).includes(fresh), "the list shows keys masked");
  await made.getByTestId("rotate").click();
  await page.getByTestId("fresh-key").filter({ hasText: "replaces" }).or(page.getByTestId("fresh-key").filter({ hasText: "works until" })).waitFor();
  assert.notEqual(await page.getByTestId("fresh-key").locator("code").innerText(), fresh);
  await shot(page, "07-keys");
  const active = page.locator('[data-key="made-in-console"]').filter({ has: page.getByTestId("revoke") });
  const before = await active.count();
  await active.first().getByTestId("revoke").click();
  await page.waitForFunction((n) => document.querySelectorAll('[data-key="made-in-console"] [data-testid="revoke"]').length === n - 1, before);

  // Secrets: stored from the page (the value never shown back), listed with hosts, deleted.
  await page.getByTestId("nav-secrets").click();
  const secretValue = `console-${Date.now()}-value`;
  await page.getByTestId("secret-name").fill("console-secret");
  await page.getByTestId("secret-value").fill(secretValue);
  await page.getByTestId("secret-hosts").fill("api.example.test, *.pkg.test");
  await page.getByTestId("save-secret").click();
  const secretRow = page.locator('[data-secret="console-secret"]');
  await secretRow.waitFor();
  assert.match(await secretRow.innerText(), /api\.example\.test, \*\.pkg\.test/);
  assert.ok(!(await page.content()).includes(secretValue), "the value is never shown back");
  await shot(page, "07b-secrets");
  await secretRow.getByTestId("delete-secret").click();
  await secretRow.waitFor({ state: "detached" });

  // Volumes: made from the page with a size, listed, deleted.
  await page.getByTestId("nav-volumes").click();
  await page.getByTestId("volume-name").fill("console-volume");
  await page.getByTestId("volume-size").fill("64");
  await page.getByTestId("create-volume").click();
  const volumeRow = page.locator('[data-volume="console-volume"]');
  await volumeRow.waitFor();
  assert.match(await volumeRow.innerText(), /64 MB/);
  assert.match(await volumeRow.innerText(), /vol_[0-9a-f]{16}/);
  await shot(page, "07c-volumes");
  await volumeRow.getByTestId("delete-volume").click();
  await volumeRow.waitFor({ state: "detached" });

  // The audit trail, filtered to the sandbox: its creation and the token the console asked for.
  await page.getByTestId("nav-audit").click();
  await page.getByTestId("filter-sandbox_id").fill(id);
  await page.getByTestId("apply-filters").click();
  await page.locator('[data-action="sandbox.create"]').first().waitFor();
  const actions = await page.locator("[data-action]").evaluateAll((rows) => rows.map((r) => r.dataset.action));
  assert.ok(actions.every((a) => a) && actions.length >= 2, JSON.stringify(actions));
  await shot(page, "08-audit");

  // Another tenant's sandbox: not found for this key, and its terminal refuses this sandbox's token.
  await page.goto(`${CONSOLE}#/sandboxes/${OTHER_SANDBOX}`);
  await page.getByRole("alert").filter({ hasText: /not found/i }).waitFor();
  assert.equal(await page.getByTestId("sandbox-facts").count(), 0);
  await shot(page, "09-other-tenants-sandbox");
  const crossed = await page.evaluate(
    async ([other, mine]) => {
      const r = await fetch(`/v1/sandboxes/${mine}/token/refresh`, {
        method: "POST",
        headers: { "X-API-Key": sessionStorage.getItem("warren.apiKey") },
      });
      const token = (await r.json()).auth_token;
      return await new Promise((resolve) => {
        const scheme = location.protocol === "https:" ? "wss" : "ws";
        const ws = new WebSocket(`${scheme}://${location.host}/console/terminal/${other}`, ["warren.console", `warren.token.${token}`]);
        ws.onopen = () => resolve("opened");
        ws.onerror = () => resolve("refused");
      });
    },
    [OTHER_SANDBOX, id],
  );
  assert.equal(crossed, "refused");

  // Kill from the sandbox's page: back to the list, and the API no longer has it running.
  await page.goto(`${CONSOLE}#/sandboxes/${id}`);
  await page.getByTestId("sandbox-facts").waitFor();
  await page.getByTestId("kill").first().click();
  await page.waitForURL(/#\/sandboxes$/);
  const after = await page.evaluate(async (sid) => {
    const r = await fetch(`/v1/sandboxes/${sid}`, { headers: { "X-API-Key": sessionStorage.getItem("warren.apiKey") } });
    return r.status === 404 ? "gone" : (await r.json()).status;
  }, id);
  assert.ok(after === "gone" || after === "deleted" || after === "stopped", after);

  // Sign out: the key leaves the tab.
  await page.getByTestId("sign-out").click();
  await page.getByLabel("API key").waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem("warren.apiKey")), null);

  // A member key of another tenant: its own sandbox, no admin pages.
  await signIn(page, MEMBER_KEY);
  await page.locator(`[data-sandbox="${OTHER_SANDBOX}"]`).waitFor();
  assert.equal(await page.getByTestId("nav-keys").count(), 0);
  assert.equal(await page.getByTestId("nav-audit").count(), 0);
  assert.equal(await page.locator(`[data-sandbox="${id}"]`).count(), 0);
  await shot(page, "10-member-sandboxes");

  // No URL the browser asked for carried a key or a token.
  const leaked = seenUrls.filter((u) => u.includes(ADMIN_KEY) || u.includes(MEMBER_KEY) || /token=|api_key=|access_token/.test(u));
  assert.deepEqual(leaked, []);
}

const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"] });
try {
  // The HTTPS session's certificate comes from the CA the test server generated.
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 }, acceptDownloads: true, ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.on("dialog", (d) => d.accept());
  const seenUrls = [];
  page.on("request", (r) => seenUrls.push(r.url()));

  // A wrong key is refused, and the console stays on the sign-in page.
  await signIn(page, "wrn_live_not_a_real_key_000000000000000");
  await page.getByRole("alert").filter({ hasText: "refused" }).waitFor();
  await shot(page, "01-sign-in-refused");

  // Sign in: the key is in this tab's sessionStorage, never in a URL, a cookie or localStorage.
  await signIn(page, ADMIN_KEY);
  await page.getByTestId("nav-keys").waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem("warren.apiKey")), ADMIN_KEY);
  assert.equal(await page.evaluate(() => localStorage.length), 0);
  assert.equal((await context.cookies()).length, 0);

  let id = process.env.SANDBOX;
  if (id) {
    // The short tour (the HTTPS session) opens a sandbox made through the API: over HTTP/2,
    // Chromium drops requests in flight when the host's interfaces change, as they do when a
    // sandbox starts on the machine the browser runs on (see docs/console.md).
    await page.goto(`${CONSOLE}#/sandboxes/${id}`);
  } else {
    // Create from a template: the console opens the new sandbox's page.
    await page.getByTestId("template").selectOption("base");
    await page.getByTestId("create").click();
    await page.waitForURL(/#\/sandboxes\/[a-z0-9]+$/, { timeout: 60000 });
    id = decodeURIComponent(page.url().split("/").pop());
  }
  await page.getByTestId("sandbox-facts").getByText("running").waitFor();

  // The terminal: a shell that echoes what is typed.
  await page.getByTestId("terminal-state").filter({ hasText: "connected" }).waitFor({ timeout: 30000 });
  await page.getByTestId("terminal").click();
  await page.keyboard.type("echo console-$((6*7))\n");
  await page.locator(".xterm-rows").filter({ hasText: "console-42" }).waitFor({ timeout: 15000 });
  await shot(page, "02-sandbox-terminal");

  // The short tour ends here: the page, its API calls and the terminal over wss:// on HTTPS.
  if (!process.env.SANDBOX) await theRest(page, context, id, seenUrls);
  console.log(`console ok (${id})`);
} catch (e) {
  // What the page showed when it failed, for the log and to look at.
  for (const p of browser.contexts().flatMap((c) => c.pages())) {
    await p.screenshot({ path: join(SHOTS, "failure.png"), fullPage: true }).catch(() => {});
    console.log(`page ${p.url()} showed:\n${await p.locator("body").innerText().catch(() => "?")}`);
  }
  throw e;
} finally {
  await browser.close();
}
