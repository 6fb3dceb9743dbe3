// E2B's desktop SDK for JS (npm `@e2b/desktop`), unmodified, on Warren's `desktop` template:
// screen, mouse, keyboard, launch, open, then the stream, opened in Chromium (viewer.mjs) at the
// URL the SDK builds, rewritten to the test server's plain-HTTP port (SERVER_PORT) with the
// wildcard domain mapped to it (HOST_RULES). Exits non-zero on the first failed assertion.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { Sandbox } from "@e2b/desktop";

const desktop = await Sandbox.create({ timeoutMs: 300_000 });
try {
  assert.deepEqual(await desktop.getScreenSize(), { width: 1024, height: 768 });
  const shot = await desktop.screenshot();
  assert.equal(Buffer.from(shot.subarray(0, 4)).toString("hex"), "89504e47");
  await desktop.moveMouse(120, 210);
  assert.deepEqual(await desktop.getCursorPosition(), { x: 120, y: 210 });
  await desktop.leftClick();
  await desktop.launch("xfce4-terminal");
  await desktop.wait(3000);
  assert.ok((await desktop.getApplicationWindows("xfce4-terminal")).length > 0, "the terminal opened a window");
  await desktop.write("echo typed-js > /tmp/typed.txt");
  await desktop.press("enter");
  await desktop.wait(1000);
  assert.equal((await desktop.commands.run("cat /tmp/typed.txt")).stdout.trim(), "typed-js");
  await desktop.open("/tmp/typed.txt");

  await desktop.stream.start();
  const url = desktop.stream.getUrl();
  const host = new URL(url).hostname;
  assert.equal(host, `6080-${desktop.sandboxId}.${process.env.E2B_DOMAIN}`);
  const viewer = url.replace(`https://${host}/`, `http://${host}:${process.env.SERVER_PORT}/`);
  const r = spawnSync("node", ["viewer.mjs"], {
    env: { ...process.env, VIEWER_URL: viewer },
    encoding: "utf8",
    timeout: 90_000,
  });
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  await desktop.stream.stop();
  console.log("desktop-js ok");
} finally {
  await desktop.kill();
}
