import { useState } from "preact/hooks";
import { api, type Sandbox } from "../api";
import { age, until, when } from "../format";
import { go } from "../route";
import { Problem, Section, Status, usePoll } from "../ui";
import { SandboxActions } from "./SandboxActions";
import { TerminalView } from "./TerminalView";
import { Files } from "./Files";
import { Processes } from "./Processes";

type Tab = "terminal" | "files" | "processes";

export function SandboxPage({ id }: { id: string }) {
  const sb = usePoll(() => api<Sandbox>("GET", `/v1/sandboxes/${encodeURIComponent(id)}`), [id], 5000);
  const [tab, setTab] = useState<Tab>("terminal");
  const [problem, setProblem] = useState<unknown>(null);
  const s = sb.data;
  if (!s) {
    return (
      <Section title={`Sandbox ${id}`}>
        {sb.error ? <Problem error={sb.error} /> : <p>Loading…</p>}
        <p>
          <a href="#/sandboxes">Back to the sandboxes</a>
        </p>
      </Section>
    );
  }
  const running = s.status === "running";
  return (
    <>
      <Section
        title={`Sandbox ${s.id}`}
        actions={<SandboxActions sandbox={s} onDone={sb.reload} onError={setProblem} afterKill={() => go("sandboxes")} />}
      >
        <dl class="facts" data-testid="sandbox-facts">
          <dt>Status</dt>
          <dd>
            <Status value={s.status} /> {s.status_reason && <span class="muted">({s.status_reason})</span>}
          </dd>
          <dt>Template</dt>
          <dd>{s.template_name ?? "—"}</dd>
          <dt>Isolation</dt>
          <dd>{s.isolation}</dd>
          <dt>Resources</dt>
          <dd>
            {s.resources.vcpu} vCPU, {s.resources.memory_mb} MiB memory, {Math.round(s.resources.disk_mb / 1024)} GiB disk
          </dd>
          <dt>Internet</dt>
          <dd>{s.internet_access ? "on" : "off"}</dd>
          <dt>Volumes</dt>
          <dd data-testid="sandbox-volumes">
            {s.volumes?.length
              ? s.volumes.map((v) => `${v.name} at ${v.path}${v.read_only ? " (read-only)" : ""}`).join(", ")
              : "none"}
          </dd>
          <dt>Created</dt>
          <dd>
            {when(s.created_at)} ({age(s.created_at)})
          </dd>
          <dt>Expires</dt>
          <dd>
            {when(s.expires_at)} ({until(s.expires_at)})
          </dd>
        </dl>
        <Problem error={problem ?? sb.error} />
      </Section>
      {running ? (
        <section class="card">
          <div class="tabs" role="tablist">
            {(["terminal", "files", "processes"] as Tab[]).map((t) => (
              <button role="tab" class={tab === t ? "active" : ""} data-testid={`tab-${t}`} onClick={() => setTab(t)}>
                {t[0].toUpperCase() + t.slice(1)}
              </button>
            ))}
          </div>
          {tab === "terminal" && <TerminalView id={s.id} />}
          {tab === "files" && <Files id={s.id} />}
          {tab === "processes" && <Processes id={s.id} />}
        </section>
      ) : (
        <Section title="Inside the sandbox">
          <p class="empty">The sandbox is {s.status}: resume it to use its terminal, files and processes.</p>
        </Section>
      )}
    </>
  );
}
