// One JS SDK release's smoke scenario against Warren (the compatibility matrix:
// test_sdk_matrix.py). Copied into that release's install directory and run there:
// `node smoke.mjs e2b|code-interpreter|hopx`. Prints one line of JSON: the installed versions
// and, on failure, what failed. Settings come from the environment (E2B_API_URL,
// E2B_SANDBOX_URL, E2B_API_KEY; HOPX_BASE_URL, HOPX_API_KEY).
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));

function installed() {
  const out = {};
  for (const name of ["e2b", "@e2b/code-interpreter", "@hopx-ai/sdk"]) {
    try {
      out[name] = JSON.parse(fs.readFileSync(path.join(here, "node_modules", name, "package.json"))).version;
    } catch {}
  }
  return out;
}

const scenarios = {
  async e2b() {
    const { Sandbox } = await import("e2b");
    const sbx = await Sandbox.create("base", { timeoutMs: 120_000, metadata: { matrix: "1" } });
    try {
      assert.equal((await sbx.commands.run("echo hi")).stdout, "hi\n");
      await sbx.files.write("/home/user/m.txt", "matrix");
      assert.equal(await sbx.files.read("/home/user/m.txt"), "matrix");
      assert.ok((await sbx.files.list("/home/user")).some((e) => e.name === "m.txt"));
      assert.ok(await sbx.isRunning());
    } finally {
      await sbx.kill();
    }
  },
  async "code-interpreter"() {
    const { Sandbox } = await import("@e2b/code-interpreter");
    const sbx = await Sandbox.create({ timeoutMs: 120_000 });
    try {
      const ex = await sbx.runCode("x = 20\nx + 22");
      assert.equal(ex.text, "42");
      const out = await sbx.runCode("print(x)");
      assert.equal(out.logs.stdout.join(""), "20\n");
    } finally {
      await sbx.kill();
    }
  },
  async hopx() {
    const { Sandbox } = await import("@hopx-ai/sdk");
    const sb = await Sandbox.create({
      template: "code-interpreter", baseURL: process.env.HOPX_BASE_URL, apiKey: process.env.HOPX_API_KEY,
    });
    try {
      const r = await sb.runCode("print(6 * 7)");
      assert.match(r.stdout, /42/);
      await sb.files.write("/workspace/m.txt", "matrix");
      assert.equal(await sb.files.read("/workspace/m.txt"), "matrix");
      assert.equal((await sb.commands.run("echo hi")).stdout.trim(), "hi");
    } finally {
      await sb.kill();
    }
  },
};

const result = { versions: installed() };
try {
  await scenarios[process.argv[2]]();
  result.ok = true;
} catch (e) {
  result.ok = false;
  // undici says only "fetch failed"; what failed is in the cause.
  const cause = e?.cause ? ` (${e.cause.code ?? ""} ${e.cause.message ?? e.cause})` : "";
  result.error = `${e?.name}: ${e?.message}${cause}`.slice(0, 500);
  result.trace = String(e?.stack ?? "").slice(-2000);
}
console.log(JSON.stringify(result));
process.exit(0);
