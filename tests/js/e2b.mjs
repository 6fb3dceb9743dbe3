// The E2B protocol with E2B's official JS SDKs (npm `e2b`, `@e2b/code-interpreter`), unmodified,
// pointed at Warren by E2B_API_URL / E2B_SANDBOX_URL (or E2B_DOMAIN) and E2B_API_KEY.
// Usage: node e2b.mjs E1. Exits non-zero on the first failed assertion.
import assert from "node:assert/strict";
import fs from "node:fs";
import { Sandbox, CommandExitError, NotFoundError, FilesystemEventType, Template, Volume, waitForPort } from "e2b";
import os from "node:os";
import path from "node:path";
import { Sandbox as CodeSandbox } from "@e2b/code-interpreter";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// E2B_DOMAIN mode: the test stands in for DNS with /etc/hosts lines (marked, removed after).
function resolveSandboxHosts(sbx) {
  const lines = [49983, 49999].map((p) => `127.0.0.1 ${p}-${sbx.sandboxId}.${process.env.E2B_DOMAIN} ${process.env.E2B_TEST_HOSTS_MARK}\n`);
  fs.appendFileSync("/etc/hosts", lines.join(""));
}

const scenarios = {
  // E2B_DOMAIN mode over HTTPS: commands, files and code through <port>-<id>.<domain>.
  async D1() {
    const sbx = await CodeSandbox.create();
    resolveSandboxHosts(sbx);
    try {
      assert.equal((await sbx.commands.run("echo js-domain")).stdout, "js-domain\n");
      await sbx.files.write("/tmp/j.txt", "js");
      assert.equal(await sbx.files.read("/tmp/j.txt"), "js");
      assert.equal((await sbx.runCode("6 * 7")).text, "42");
    } finally {
      await sbx.kill();
    }
  },
  // Lifecycle, metadata, commands, background, files, watch.
  async E1() {
    const tag = Math.random().toString(36).slice(2);
    const sbx = await Sandbox.create("base", { metadata: { run: tag }, timeoutMs: 120_000 });
    try {
      const found = await Sandbox.list({ query: { metadata: { run: tag } } }).nextItems();
      assert.deepEqual(found.map((s) => s.sandboxId), [sbx.sandboxId]);
      const info = await sbx.getInfo();
      assert.equal(info.metadata.run, tag);
      await sbx.setTimeout(300_000);

      const r = await sbx.commands.run("echo out; echo err >&2; whoami");
      assert.equal(r.exitCode, 0);
      assert.equal(r.stdout, "out\nuser\n");
      assert.equal(r.stderr, "err\n");
      await assert.rejects(sbx.commands.run("exit 3"), (e) => e instanceof CommandExitError && e.exitCode === 3);
      assert.equal((await sbx.commands.run("echo $X", { envs: { X: "y" }, cwd: "/tmp", user: "root" })).stdout, "y\n");

      const bg = await sbx.commands.run("cat", { background: true, stdin: true });
      await sbx.commands.sendStdin(bg.pid, "piped\n");
      await sbx.commands.closeStdin(bg.pid);
      assert.equal((await bg.wait()).stdout, "piped\n");
      const sleeper = await sbx.commands.run("sleep 600", { background: true });
      assert.ok((await sbx.commands.list()).some((p) => p.pid === sleeper.pid));
      assert.equal(await sbx.commands.kill(sleeper.pid), true);

      const events = [];
      await sbx.files.makeDir("/tmp/w");
      const watcher = await sbx.files.watchDir("/tmp/w", (e) => events.push(e));
      await sbx.files.write("/tmp/w/a.txt", "hello");
      assert.equal(await sbx.files.read("/tmp/w/a.txt"), "hello");
      const blob = new Uint8Array(1024 * 1024).map((_, i) => i % 251);
      await sbx.files.write("/tmp/w/b.bin", blob);
      const back = await sbx.files.read("/tmp/w/b.bin", { format: "bytes" });
      assert.deepEqual(Buffer.from(back), Buffer.from(blob));
      assert.deepEqual((await sbx.files.list("/tmp/w")).map((e) => e.name).sort(), ["a.txt", "b.bin"]);
      await sbx.files.rename("/tmp/w/a.txt", "/tmp/w/c.txt");
      assert.equal(await sbx.files.exists("/tmp/w/a.txt"), false);
      await sbx.files.remove("/tmp/w/c.txt");
      await sleep(500);
      await watcher.stop();
      assert.ok(events.some((e) => e.name === "a.txt" && e.type === FilesystemEventType.CREATE), JSON.stringify(events));
      assert.ok(events.every((e) => !e.name.includes(".warren-")), JSON.stringify(events));

      const term = [];
      const pty = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => term.push(Buffer.from(d).toString()) });
      await sbx.pty.sendInput(pty.pid, new TextEncoder().encode("echo pty-$((6*7)); exit\n"));
      await pty.wait();
      assert.ok(term.join("").includes("pty-42"), term.join(""));

      await sbx.pause();
      const resumed = await Sandbox.connect(sbx.sandboxId);
      assert.equal((await resumed.commands.run("echo back")).stdout, "back\n");
    } finally {
      await sbx.kill();
    }
    await assert.rejects(Sandbox.connect(sbx.sandboxId), (e) => e instanceof NotFoundError);
  },
  // https://e2b.dev/docs/quickstart (JavaScript), as written, with only the environment set.
  async E3() {
    const sbx = await CodeSandbox.create();
    const execution = await sbx.runCode('print("hello world")');
    console.log(execution.logs);
    const files = await sbx.files.list("/");
    console.log(files);
    assert.deepEqual(execution.logs.stdout, ["hello world\n"]);
    assert.ok(files.some((f) => f.name === "home"));
    await sbx.kill();
  },
  // The code interpreter: state, rich results, errors, streaming callbacks, contexts.
  async E2() {
    const sbx = await CodeSandbox.create();
    try {
      await sbx.runCode("x = 41");
      const r = await sbx.runCode("x + 1");
      assert.equal(r.text, "42");
      const chart = await sbx.runCode("import matplotlib.pyplot as plt\nplt.plot([1,2,3])\nplt.show()");
      assert.ok(chart.results.some((res) => res.png && Buffer.from(res.png, "base64").subarray(0, 4).toString("hex") === "89504e47"));
      const err = await sbx.runCode("1/0");
      assert.equal(err.error.name, "ZeroDivisionError");
      assert.ok(err.error.traceback.includes("ZeroDivisionError"));
      const out = [];
      await sbx.runCode("print('streamed')", { onStdout: (m) => out.push(m.line) });
      assert.ok(out.join("").includes("streamed"));
      const ctx = await sbx.createCodeContext();
      const isolated = await sbx.runCode("x", { context: ctx });
      assert.equal(isolated.error.name, "NameError");
    } finally {
      await sbx.kill();
    }
  },
  // Volumes: made, written through the content API, mounted by two sandboxes at once (by volume
  // and by name), shown by getInfo, kept after both end. Needs E2B_VOLUME_API_URL.
  async V1() {
    const vol = await Volume.create(`js-vol-${Math.random().toString(36).slice(2, 10)}`);
    const made = [];
    try {
      await vol.writeFile("/from-api.txt", "api\n");
      const a = await Sandbox.create("base", { volumeMounts: { "/mnt/v": vol } });
      made.push(a);
      const b = await Sandbox.create("base", { volumeMounts: { "/data": vol.name } });
      made.push(b);
      assert.equal(await a.files.read("/mnt/v/from-api.txt"), "api\n");
      await a.files.write("/mnt/v/from-a.txt", "a\n");
      assert.equal(await b.files.read("/data/from-a.txt"), "a\n");
      assert.deepEqual((await b.getInfo()).volumeMounts, [{ name: vol.name, path: "/data" }]);
      for (const s of made) await s.kill();
      assert.equal(await vol.readFile("/from-a.txt"), "a\n");
    } finally {
      for (const s of made) await s.kill().catch(() => {});
      assert.ok(await Volume.destroy(vol.volumeId));
    }
  },
  // The template builder: COPY by hash upload, RUN as the default user and as root, ENV, WORKDIR,
  // a start command with a ready check; then a sandbox of it.
  async T1() {
    const ctx = fs.mkdtempSync(path.join(os.tmpdir(), "e2b-js-tpl-"));
    fs.writeFileSync(path.join(ctx, "hello.txt"), "from js\n");
    const name = `e2b-js-${Math.random().toString(36).slice(2, 10)}`;
    const template = Template({ fileContextPath: ctx })
      .fromTemplate("base")
      .copy("hello.txt", "/home/user/hello.txt")
      .setEnvs({ JS_GREETING: "hi-js" })
      .runCmd("whoami > /home/user/who.txt")
      .runCmd("id -un > /opt/root-who", { user: "root" })
      .setWorkdir("/home/user/work")
      .setStartCmd("python3 -m http.server 8124", waitForPort(8124));
    const logs = [];
    const info = await Template.build(template, name, { onBuildLogs: (e) => logs.push(e.message) });
    assert.ok(info.templateId);
    assert.ok(logs.some((m) => m.includes("RUN")), logs.join("\n"));
    assert.ok(await Template.exists(name));
    const sbx = await Sandbox.create(name);
    try {
      assert.equal(await sbx.files.read("/home/user/hello.txt"), "from js\n");
      assert.equal(await sbx.files.read("/home/user/who.txt"), "user\n");
      assert.equal(await sbx.files.read("/opt/root-who"), "root\n");
      assert.equal((await sbx.commands.run("echo $JS_GREETING; pwd")).stdout, "hi-js\n/home/user/work\n");
      assert.ok((await sbx.commands.run("curl -s http://127.0.0.1:8124/")).stdout.includes("Directory listing"));
    } finally {
      await sbx.kill();
      fs.rmSync(ctx, { recursive: true, force: true });
    }
  },
};

const name = process.argv[2];
if (!scenarios[name]) {
  console.error(`unknown scenario ${name}`);
  process.exit(2);
}
try {
  await scenarios[name]();
  console.log(`${name} ok`);
  process.exit(0);
} catch (e) {
  console.error(e);
  process.exit(1);
}
