// Spec §8.2 scenarios with the official @hopx-ai/sdk, unmodified. Usage: node scenarios.mjs J1
// (BASE_URL and HOPX_API_KEY in the environment). Exits non-zero on the first failed assertion.
import assert from "node:assert/strict";
import { Sandbox } from "@hopx-ai/sdk";

const baseURL = process.env.BASE_URL;
const apiKey = process.env.HOPX_API_KEY;

const scenarios = {
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
};

const name = process.argv[2];
await scenarios[name]();
console.log(`${name} ok`);
