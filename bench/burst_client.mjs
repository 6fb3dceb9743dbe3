// One client process of bench/burst.py: starts COUNT sandbox lifecycles at once through an
// official JS SDK, each timed as the computesdk benchmark times it (a clock around
// `Sandbox.create()` and the first command's result; the kill after it is not timed), and prints
// one JSON line: each lifecycle's milliseconds, failures, and this process's CPU time meanwhile.
//
// Usage: node burst_client.mjs SDK COUNT START_AT_MS TEMPLATE [seq]   (SDK: e2b or hopx)
// With `seq`, the COUNT lifecycles run one after another instead (each killed before the next).
// E2B's SDK reads E2B_API_URL / E2B_SANDBOX_URL / E2B_API_KEY; Hopx's, WARREN_URL / WARREN_API_KEY.
// Run from tests/js (its node_modules has both SDKs).
import { createRequire } from "node:module";
import path from "node:path";
import { performance } from "node:perf_hooks";

// The SDKs are installed in tests/js (the working directory), not beside this file.
const require = createRequire(path.join(process.cwd(), "package.json"));

const [sdk, countArg, startAtArg, template, mode] = process.argv.slice(2);
const count = Number(countArg);
const startAt = Number(startAtArg);

async function e2bOne() {
  const { Sandbox } = require("e2b");
  const t0 = performance.now();
  const sbx = await Sandbox.create(template);
  const r = await sbx.commands.run('echo "benchmark"');
  const ms = performance.now() - t0;
  if (r.stdout !== "benchmark\n") throw new Error(`unexpected output ${JSON.stringify(r.stdout)}`);
  return [ms, () => sbx.kill()];
}

async function hopxOne() {
  const { Sandbox } = require("@hopx-ai/sdk");
  const t0 = performance.now();
  const sb = await Sandbox.create({
    template,
    baseURL: process.env.WARREN_URL,
    apiKey: process.env.WARREN_API_KEY,
  });
  const r = await sb.commands.run('echo "benchmark"');
  const ms = performance.now() - t0;
  if (r.stdout !== "benchmark\n") throw new Error(`unexpected answer ${JSON.stringify(r).slice(0, 400)}`);
  return [ms, () => sb.kill()];
}

const one = sdk === "e2b" ? e2bOne : hopxOne;
// Modules loaded before the clock starts: their loading is start-up, not a create.
// One list call, untimed, before the clock: the SDK's HTTP client and code paths are warm, as
// in a client process that has talked to the API before (each process would otherwise pay its
// first-use cost inside the first burst it drives).
if (sdk === "e2b") {
  await require("e2b").Sandbox.list().nextItems();
} else {
  await require("@hopx-ai/sdk").Sandbox.list({
    baseURL: process.env.WARREN_URL,
    apiKey: process.env.WARREN_API_KEY,
  });
}
await new Promise((r) => setTimeout(r, Math.max(0, startAt - Date.now())));

const samples = [];
const failures = [];
const kills = [];
function keep(r) {
  if (r.status === "fulfilled") {
    samples.push(r.value[0]);
    kills.push(r.value[1]);
  } else {
    failures.push(String(r.reason?.message ?? r.reason));
  }
}
let cpu = { user: 0, system: 0 };
if (mode === "seq") {
  for (let i = 0; i < count; i++) {
    const cpu0 = process.cpuUsage();
    const [r] = await Promise.allSettled([one()]);
    const used = process.cpuUsage(cpu0);
    cpu = { user: cpu.user + used.user, system: cpu.system + used.system };
    keep(r);
    await Promise.allSettled(kills.splice(0).map((k) => k()));
  }
} else {
  const cpu0 = process.cpuUsage();
  const results = await Promise.allSettled(Array.from({ length: count }, () => one()));
  cpu = process.cpuUsage(cpu0);
  results.forEach(keep);
  await Promise.allSettled(kills.map((k) => k()));
}
console.log(JSON.stringify({ samples, failures, cpu_ms: (cpu.user + cpu.system) / 1000 }));
