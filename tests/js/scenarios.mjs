// Spec §8.2 scenarios with the official @hopx-ai/sdk, unmodified. Usage: node scenarios.mjs J1
// (BASE_URL and HOPX_API_KEY in the environment). Exits non-zero on the first failed assertion.
import assert from "node:assert/strict";
import http from "node:http";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Sandbox, Template, waitForFile } from "@hopx-ai/sdk";

const baseURL = process.env.BASE_URL;
const apiKey = process.env.HOPX_API_KEY;

const scenarios = {
  // A create a warm pool answers (test_pool.py): what the caller asked for, nothing of the pool.
  async P1() {
    const sb = await Sandbox.create({
      template: "code-interpreter", baseURL, apiKey,
      envVars: { POOL_JS: "from-js" }, timeoutSeconds: 300, internetAccess: false,
    });
    try {
      const r = await sb.runCode("import os; print(os.environ.get('POOL_JS'), sorted(os.listdir('/sys/class/net')))");
      assert.equal(r.stdout, "from-js ['lo']\n");
      const c = await sb.commands.run("echo $POOL_JS $(ps -o etimes= -p 1)");
      const [env, age] = c.stdout.trim().split(/\s+/);
      assert.equal(env, "from-js");
      // Started before the create: it came from the pool.
      assert.ok(Number(age) >= Number(process.env.MIN_AGE || "0"), `agent started ${age} s ago`);
      const info = await sb.getInfo();
      assert.equal(info.internetAccess, false);
      assert.equal(info.timeoutSeconds, 300);
      assert.equal(info.resources.memoryMb, Number(process.env.MEMORY_MB));
    } finally {
      await sb.kill();
    }
  },
  async J1() {
    const sb = await Sandbox.create({ template: "code-interpreter", baseURL, apiKey });
    const r = await sb.runCode("print(1)");
    assert.equal(r.stdout, "1\n");
    await sb.files.write("/workspace/hello.txt", "hi");
    assert.equal(await sb.files.read("/workspace/hello.txt"), "hi");
    await sb.kill();
  },
  async J7() {
    const sb = await Sandbox.create({ template: "code-interpreter", baseURL, apiKey });
    try {
      const blob = Buffer.from([0, 1, 2, 250, 255, 10, 13, 0]);
      await sb.files.writeBytes("/workspace/b/x.bin", blob);
      const back = await sb.files.readBytes("/workspace/b/x.bin");
      assert.deepEqual(Buffer.from(back), blob);
      const list = await sb.files.list("/workspace/b");
      const entry = list.find((f) => f.name === "x.bin");
      assert.ok(entry, "x.bin listed");
      assert.equal(entry.size, blob.length);
      assert.equal(await sb.files.exists("/workspace/b/x.bin"), true);
      assert.equal(await sb.files.exists("/workspace/none"), false);
      await sb.files.mkdir("/workspace/m/n");
      assert.equal(await sb.files.exists("/workspace/m/n"), true);
      await sb.files.remove("/workspace/m");
      assert.equal(await sb.files.exists("/workspace/m"), false);
      const dl = await sb.files.download("/workspace/b/x.bin");
      assert.deepEqual(Buffer.from(dl), blob);
    } finally {
      await sb.kill();
    }
  },
  async J8() {
    const sb = await Sandbox.create({ template: "code-interpreter", baseURL, apiKey, envVars: { FROM_CREATE: "yes" } });
    try {
      await sb.env.set("A", "1");
      await sb.env.update({ B: "2" });
      const all = await sb.env.getAll();
      assert.equal(all.A, "1");
      assert.equal(all.B, "2");
      assert.equal(all.FROM_CREATE, "yes");
      assert.equal(await sb.env.get("B"), "2");
      await sb.env.delete("A");
      assert.equal((await sb.env.getAll()).A, undefined);
      await sb.env.setAll({ ONLY: "x" });
      assert.deepEqual(await sb.env.getAll(), { ONLY: "x" });
      const r = await sb.runCode("import os; print(os.environ.get('ONLY'))");
      assert.equal(r.stdout, "x\n");
    } finally {
      await sb.kill();
    }
  },
  // Background work and processes (J5's background/process calls, and runCodeAsync).
  async J5() {
    const sb = await Sandbox.create({ template: "code-interpreter", baseURL, apiKey });
    const hooks = [];
    const hook = http.createServer((req, res) => {
      let body = "";
      req.on("data", (c) => (body += c));
      req.on("end", () => {
        hooks.push({ headers: req.headers, body });
        res.end("ok");
      });
    });
    await new Promise((r) => hook.listen(0, "127.0.0.1", r));
    try {
      const bg = await sb.runCodeBackground("import time; time.sleep(600)", { name: "js-bg" });
      const listed = (await sb.listProcesses()).find((p) => p.process_id === bg.process_id);
      assert.ok(listed, "background process listed");
      assert.equal(listed.status, "running");
      await sb.killProcess(bg.process_id);
      const after = (await sb.listProcesses()).find((p) => p.process_id === bg.process_id);
      assert.equal(after.status, "killed");

      const callbackUrl = `http://127.0.0.1:${hook.address().port}/cb`;
      const queued = await sb.runCodeAsync("print('js-async')", { callbackUrl, callbackSignatureSecret: "k" });
      assert.equal(queued.status, "queued");
      for (let i = 0; i < 100 && hooks.length === 0; i++) await new Promise((r) => setTimeout(r, 100));
      assert.equal(hooks.length, 1, "callback received");
      const payload = JSON.parse(hooks[0].body);
      assert.equal(payload.execution_id, queued.execution_id);
      assert.equal(payload.stdout, "js-async\n");
      assert.match(hooks[0].headers["x-hopx-signature"], /^sha256=[0-9a-f]{64}$/);
    } finally {
      hook.close();
      await sb.kill();
    }
  },
  // A cluster: CLUSTER_N sandboxes through this control plane; code, files and a terminal on
  // each, wherever it was placed. Prints each sandbox's public host.
  async C1() {
    const n = Number(process.env.CLUSTER_N || "3");
    const sbs = await Promise.all(
      Array.from({ length: n }, () => Sandbox.create({ template: "code-interpreter", baseURL, apiKey })),
    );
    try {
      for (const sb of sbs) {
        const info = await sb.getInfo();
        const r = await sb.runCode("print(6*7)");
        assert.equal(r.stdout, "42\n");
        await sb.files.write("/workspace/c1.txt", info.publicHost);
        assert.equal(await sb.files.read("/workspace/c1.txt"), info.publicHost);
        const ws = await sb.terminal.connect();
        sb.terminal.sendInput(ws, "echo term-$((20+22)); exit 3\n");
        let out = "";
        let exit;
        for await (const m of sb.terminal.output(ws)) {
          if (m.type === "output") out += m.data;
          if (m.type === "exit") exit = m.code;
        }
        assert.ok(out.includes("term-42"), out);
        assert.equal(exit, 3);
        console.log(`C1 host ${info.publicHost}`);
      }
    } finally {
      await Promise.all(sbs.map((sb) => sb.kill()));
    }
  },
  // Streams, terminals and watches all terminate (a hang fails the test by timeout).
  async J9() {
    const sb = await Sandbox.create({ template: "code-interpreter", baseURL, apiKey });
    try {
      const msgs = [];
      for await (const m of sb.runCodeStream("for i in range(3): print(i)")) msgs.push(m);
      assert.deepEqual(msgs.slice(-2).map((m) => m.type), ["result", "complete"]);
      assert.equal(msgs.filter((m) => m.type === "stdout").map((m) => m.data).join(""), "0\n1\n2\n");

      // Many small chunks back to back: none may be lost on the way to the JS client.
      let many = "";
      for await (const m of sb.runCodeStream("for i in range(3000): print(i, flush=True)")) {
        if (m.type === "stdout") many += m.data;
      }
      assert.equal(many, Array.from({ length: 3000 }, (_, i) => `${i}\n`).join(""));

      const failing = [];
      for await (const m of sb.runCodeStream("import time; time.sleep(30)", { timeout: 1 })) failing.push(m);
      assert.equal(failing.at(-1).type, "complete");
      assert.equal(failing.at(-1).success, false);

      const ws = await sb.terminal.connect();
      sb.terminal.resize(ws, 100, 30);
      sb.terminal.sendInput(ws, "echo js-term; exit 4\n");
      let out = "";
      let exit;
      for await (const m of sb.terminal.output(ws)) {
        if (m.type === "output") out += m.data;
        if (m.type === "exit") exit = m.code;
      }
      assert.ok(out.includes("js-term"), out);
      assert.equal(exit, 4);

      await sb.files.mkdir("/workspace/jw");
      let stop = false;
      const writer = (async () => {
        for (let i = 0; i < 100 && !stop; i++) {
          await sb.files.write(`/workspace/jw/f${i}.txt`, "x");
          await new Promise((r) => setTimeout(r, 100));
        }
      })();
      for await (const ev of sb.watchFiles("/workspace")) {
        if (ev.type === "change" && ev.path.startsWith("/workspace/jw/")) break;
      }
      stop = true;
      await writer;
    } finally {
      await sb.kill();
    }
  },
  // Templates: list/get/delete and a build with COPY, ENV (JS shape), WORKDIR (JS shape), readyCmd.
  async J11() {
    const names = (await Sandbox.listTemplates({ baseURL, apiKey })).map((t) => t.name);
    assert.ok(names.includes("code-interpreter") && names.includes("base"), names.join(","));
    const ci = await Sandbox.getTemplate("code-interpreter", { baseURL, apiKey });
    assert.equal(ci.name, "code-interpreter");
    const ctx = fs.mkdtempSync(path.join(os.tmpdir(), "j11-"));
    fs.mkdirSync(path.join(ctx, "site"));
    fs.writeFileSync(path.join(ctx, "site", "index.html"), "<h1>j11</h1>\n");
    const name = `j11-${Date.now()}`;
    const t = new Template("base")
      .copy("site/", "/srv/site")
      .setEnv("J11_MODE", "built")
      .setWorkdir("/srv/site")
      .runCmd("touch /srv/site/ready.flag")
      .setStartCmd("sleep 1000", waitForFile("/srv/site/ready.flag"));
    const logs = [];
    const result = await Template.build(t, { name, apiKey, baseURL, contextPath: ctx, onLog: (l) => logs.push(l) });
    const vm = await result.createVM({});
    const sb = await Sandbox.connect(vm.vmID, apiKey, baseURL);
    try {
      const r = await sb.commands.run("cat index.html; echo $J11_MODE; pwd");
      assert.equal(r.stdout, "<h1>j11</h1>\nbuilt\n/srv/site\n");
    } finally {
      await sb.kill();
    }
    await Sandbox.deleteTemplate(result.templateID, { baseURL, apiKey });
    fs.rmSync(ctx, { recursive: true, force: true });
    const after = (await Sandbox.listTemplates({ baseURL, apiKey })).map((x) => x.name);
    assert.ok(!after.includes(name), "deleted template still listed");
  },
};

// A sandbox without a desktop: the desktop calls raise the SDK's own DesktopNotAvailableError.
scenarios.D0 = async () => {
  const { DesktopNotAvailableError } = await import("@hopx-ai/sdk");
  const sb = await Sandbox.create({ template: "code-interpreter", baseURL, apiKey });
  try {
    await assert.rejects(sb.desktop.getDisplayInfo(), (e) => e instanceof DesktopNotAvailableError);
    await assert.rejects(sb.desktop.screenshot(), (e) => e instanceof DesktopNotAvailableError);
  } finally {
    await sb.kill();
  }
};

// A sandbox the previous release made, after the upgrade (test_upgrade.py): SANDBOX_ID with the
// state test_restore.prepare left in it, tagged TAG.
scenarios.U1 = async () => {
  const sb = await Sandbox.connect(process.env.SANDBOX_ID, apiKey, baseURL);
  const tag = process.env.TAG;
  assert.equal(await sb.files.read("/workspace/kept.txt"), `file of ${tag}`);
  assert.equal((await sb.runCode("print(restored_variable)")).stdout, `${tag}\n`);
  assert.equal((await sb.commands.run("echo $WARREN_RESTORE_TAG")).stdout.trim(), tag);
  await sb.files.write("/workspace/from-js.txt", "written after the upgrade");
  assert.equal(await sb.files.read("/workspace/from-js.txt"), "written after the upgrade");
};

// The desktop API with the JS SDK's own paths and bodies, on a `desktop` sandbox the Python test
// made (SANDBOX_ID).
scenarios.D1 = async () => {
  const sb = await Sandbox.connect(process.env.SANDBOX_ID, apiKey, baseURL);
  const d = sb.desktop;
  const info = await d.getDisplayInfo();
  assert.equal(info.width, 1280);
  assert.equal(info.height, 800);
  const shot = await d.screenshot();
  assert.equal(shot.format, "png");
  assert.equal(shot.width, 1280);
  const png = Buffer.from(shot.image, "base64");
  assert.equal(png.subarray(1, 4).toString(), "PNG");
  assert.equal(png.readUInt32BE(16), 1280);
  const region = await d.screenshotRegion(0, 0, 64, 32);
  assert.equal(region.subarray(1, 4).toString(), "PNG");
  assert.equal(region.readUInt32BE(16), 64);
  assert.equal(region.readUInt32BE(20), 32);
  await d.mouseMove(200, 150);
  const loc = await sb.commands.run("DISPLAY=:1 xdotool getmouselocation --shell");
  assert.match(loc.stdout, /X=200\nY=150/);
  await d.mouseScroll(200, 150, 2);
  await d.setClipboard("from js");
  assert.equal(await d.getClipboard(), "from js");
  assert.ok((await d.getClipboardHistory()).includes("from js"));
  await d.keyboardCombination(["ctrl", "l"]);
  const vnc = await d.startVnc();
  assert.equal(vnc.display, 1);
  assert.match(await d.getVncUrl(), /access_token=/);
  const modes = await d.getAvailableResolutions();
  assert.ok(modes.some((m) => m.width === 1920 && m.height === 1080));
  await d.setResolution(1024, 768);
  assert.equal((await d.getDisplayInfo()).width, 1024);
  await d.setResolution(1280, 800);
  await sb.commands.run("DISPLAY=:1 setsid xterm -T js-window -e 'sleep 60' >/dev/null 2>&1 &");
  let win;
  for (let i = 0; i < 100 && !win; i++) {
    win = (await d.listWindows()).find((w) => w.title === "js-window");
    if (!win) await new Promise((r) => setTimeout(r, 200));
  }
  assert.ok(win, "the terminal window shows up");
  assert.equal(typeof win.id, "number");
  await d.focusWindow(win.id);
  const captured = await d.captureWindow(win.id);
  assert.equal(captured.subarray(1, 4).toString(), "PNG");
  await d.closeWindow(win.id);
  await d.startRecording();
  await new Promise((r) => setTimeout(r, 1500));
  await d.stopRecording();
  const status = await d.getRecordingStatus();
  assert.equal(status.status, "stopped");
  const video = await d.downloadRecording(status.recording_id);
  assert.equal(video.subarray(4, 8).toString(), "ftyp");
  assert.equal(video.length, status.file_size);
  assert.ok((await d.getDebugProcesses()).some((p) => p.name === "Xvnc"));
  assert.ok(Array.isArray(await d.getDebugLogs()));
};

const name = process.argv[2];
await scenarios[name]();
console.log(`${name} ok`);
