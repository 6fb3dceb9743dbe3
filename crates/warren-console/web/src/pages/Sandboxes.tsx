import { useState } from "preact/hooks";
import { api, type Sandbox, type Template } from "../api";
import { age, bytes, until } from "../format";
import { go } from "../route";
import { Action, Problem, Section, Status, usePoll } from "../ui";
import { SandboxActions } from "./SandboxActions";

type Usage = { cpu?: number; memory?: number };

/** CPU and memory of each running sandbox, measured by Warren from outside it, every 5 s. */
function useUsage(sandboxes: Sandbox[] | undefined): Record<string, Usage> {
  const running = (sandboxes ?? []).filter((s) => s.status === "running").map((s) => s.id);
  const usage = usePoll(
    async () => {
      const pairs = await Promise.all(
        running.map(async (id) => {
          try {
            const u = await api<{ cpu_used_pct: number; memory_used_bytes: number }>("GET", `/v1/sandboxes/${id}/usage`);
            return [id, { cpu: u.cpu_used_pct, memory: u.memory_used_bytes }] as const;
          } catch {
            return [id, {}] as const;
          }
        }),
      );
      return Object.fromEntries(pairs) as Record<string, Usage>;
    },
    [running.join(",")],
    5000,
  );
  return usage.data ?? {};
}

export function Sandboxes() {
  const page = usePoll(() => api<{ data: Sandbox[]; has_more?: boolean }>("GET", "/v1/sandboxes?limit=100"), [], 3000);
  const list = { ...page, data: page.data?.data };
  const usage = useUsage(list.data);
  const [problem, setProblem] = useState<unknown>(null);
  return (
    <>
      <CreateForm onCreated={list.reload} />
      <Section title="Sandboxes">
        <Problem error={list.error ?? problem} />
        {list.data && list.data.length === 0 && <p class="empty">No sandboxes yet: create one above.</p>}
        {page.data?.has_more && <p class="muted">The first 100 sandboxes are shown.</p>}
        {list.data && list.data.length > 0 && (
          <table data-testid="sandboxes">
            <thead>
              <tr>
                <th>Sandbox</th>
                <th>Status</th>
                <th>Template</th>
                <th>Tier</th>
                <th>Age</th>
                <th>Expires</th>
                <th>CPU</th>
                <th>Memory</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {list.data.map((s) => (
                <tr key={s.id} data-sandbox={s.id}>
                  <td>
                    <a href={`#/sandboxes/${s.id}`} class="mono">
                      {s.id}
                    </a>
                  </td>
                  <td>
                    <Status value={s.status} />
                  </td>
                  <td>{s.template_name ?? "—"}</td>
                  <td>{s.isolation}</td>
                  <td>{age(s.created_at)}</td>
                  <td>{until(s.expires_at)}</td>
                  <td>{usage[s.id]?.cpu !== undefined ? `${usage[s.id].cpu!.toFixed(1)} %` : "—"}</td>
                  <td>
                    {bytes(usage[s.id]?.memory)} / {s.resources.memory_mb} MiB
                  </td>
                  <td class="row-actions">
                    <SandboxActions sandbox={s} onDone={list.reload} onError={setProblem} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Section>
    </>
  );
}

function CreateForm({ onCreated }: { onCreated: () => void }) {
  const templates = usePoll(() => api<{ data: Template[] }>("GET", "/v1/templates").then((r) => r.data), []);
  const tiers = usePoll(() => api<{ isolation_tiers?: string[] }>("GET", "/health").then((h) => h.isolation_tiers ?? []), []);
  const [template, setTemplate] = useState("code-interpreter");
  const [tier, setTier] = useState("");
  const [minutes, setMinutes] = useState("60");
  const [internet, setInternet] = useState(true);
  const [problem, setProblem] = useState<unknown>(null);
  // Built-in templates are usable before their first build (the first create builds them).
  const ready = (templates.data ?? []).filter((t) => t.is_active !== false);
  async function create() {
    const body: Record<string, unknown> = { template_name: template, internet_access: internet };
    if (tier) body.isolation = tier;
    const m = Number(minutes);
    if (minutes.trim() && (!Number.isInteger(m) || m <= 0)) throw new Error("The timeout must be a whole number of minutes above 0.");
    if (minutes.trim()) body.timeout_seconds = m * 60;
    try {
      const sb = await api<Sandbox>("POST", "/v1/sandboxes", body);
      go("sandboxes", sb.id);
    } finally {
      // also when the answer was lost: the list shows whether the sandbox was made
      onCreated();
    }
  }
  return (
    <Section
      title="Create a sandbox"
      actions={<Action label="Create" kind="primary" testid="create" run={create} onError={setProblem} />}
    >
      <div class="form-row">
        <label>
          Template
          <select value={template} onChange={(e) => setTemplate((e.target as HTMLSelectElement).value)} data-testid="template">
            {ready.map((t) => (
              <option value={t.name}>{t.display_name || t.name}</option>
            ))}
          </select>
        </label>
        <label>
          Isolation
          <select value={tier} onChange={(e) => setTier((e.target as HTMLSelectElement).value)} data-testid="tier">
            <option value="">server default</option>
            {(tiers.data ?? []).map((t) => (
              <option value={t}>{t}</option>
            ))}
          </select>
        </label>
        <label>
          Timeout (minutes)
          <input value={minutes} size={6} onInput={(e) => setMinutes((e.target as HTMLInputElement).value)} />
        </label>
        <label class="check">
          <input type="checkbox" checked={internet} onChange={(e) => setInternet((e.target as HTMLInputElement).checked)} />
          Internet access
        </label>
      </div>
      <Problem error={problem ?? templates.error} />
    </Section>
  );
}
