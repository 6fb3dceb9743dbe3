import { useEffect, useState } from "preact/hooks";
import { api, type Template } from "../api";
import { when } from "../format";
import { Problem, Section, Status, usePoll } from "../ui";

export function Templates() {
  const list = usePoll(() => api<{ data: Template[] }>("GET", "/v1/templates").then((r) => r.data), [], 5000);
  const [logsOf, setLogsOf] = useState<Template | undefined>();
  return (
    <>
      <Section title="Templates">
        <Problem error={list.error} />
        <table data-testid="templates">
          <thead>
            <tr>
              <th>Name</th>
              <th>Description</th>
              <th>Status</th>
              <th>Owner</th>
              <th>Created</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {(list.data ?? []).map((t) => (
              <tr key={t.id} data-template={t.name}>
                <td class="mono">{t.name}</td>
                <td>{t.description ?? t.display_name}</td>
                <td>
                  <Status value={t.status ?? "active"} />
                </td>
                <td>{t.build_id ? "this organization" : "built in"}</td>
                <td>{when(t.created_at)}</td>
                <td class="row-actions">
                  {t.build_id && (
                    <button data-testid="build-logs" onClick={() => setLogsOf(t)}>
                      Build logs
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        <p class="muted">
          Build a template with an SDK's template builder or <code>hopx template build</code>; its logs stream here while it builds.
        </p>
      </Section>
      {logsOf && <BuildLogs template={logsOf} />}
    </>
  );
}

/** A build's log, followed while the build runs. */
function BuildLogs({ template }: { template: Template }) {
  const [text, setText] = useState("");
  const [status, setStatus] = useState("");
  const [problem, setProblem] = useState<unknown>(null);
  useEffect(() => {
    let offset = 0;
    let stop = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    setText("");
    async function poll() {
      try {
        const r = await api<{ logs: string; offset: number; status: string; complete: boolean }>(
          "GET",
          `/v1/templates/build/${encodeURIComponent(template.build_id ?? template.id)}/logs?offset=${offset}`,
        );
        if (stop) return;
        offset = r.offset;
        setText((t) => t + r.logs);
        setStatus(r.status);
        if (!r.complete) timer = setTimeout(poll, 1000);
      } catch (e) {
        setProblem(e);
      }
    }
    poll();
    return () => {
      stop = true;
      clearTimeout(timer);
    };
  }, [template.id]);
  return (
    <Section title={`Build logs of ${template.name}`} actions={status && <Status value={status} />}>
      <Problem error={problem} />
      {template.error_message && <div class="problem">{template.error_message}</div>}
      <pre class="logs" data-testid="build-log">
        {text || "No log kept for this build (builds before the server's last start keep none)."}
      </pre>
    </Section>
  );
}
