import { api, type Sandbox } from "../api";
import { Action } from "../ui";

const path = (s: Sandbox, op = "") => `/v1/sandboxes/${encodeURIComponent(s.id)}${op}`;

/** Pause/resume, extend by ten minutes, kill: the same buttons in the list and on a sandbox's page. */
export function SandboxActions(props: { sandbox: Sandbox; onDone: () => void; onError: (e: unknown) => void; afterKill?: () => void }) {
  const s = props.sandbox;
  const done = props.onDone;
  const live = s.status === "running" || s.status === "paused";
  if (!live) return null;
  async function extend() {
    // The timeout counts from now: what is left plus ten minutes.
    const left = Math.max(0, Math.round((Date.parse(s.expires_at ?? "") - Date.now()) / 1000)) || 0;
    await api("PUT", path(s, "/timeout"), { timeout_seconds: left + 600 });
    done();
  }
  return (
    <span class="buttons">
      {s.status === "running" ? (
        <Action label="Pause" testid="pause" run={() => api("POST", path(s, "/pause")).then(done)} onError={props.onError} />
      ) : (
        <Action label="Resume" testid="resume" run={() => api("POST", path(s, "/resume")).then(done)} onError={props.onError} />
      )}
      {/* Without a timeout there is nothing to extend (a timeout would only shorten its life). */}
      {s.expires_at && <Action label="+10 min" testid="extend" run={extend} onError={props.onError} />}
      <Action
        label="Kill"
        kind="danger"
        testid="kill"
        confirm={`Kill sandbox ${s.id}? Its files are deleted.`}
        run={() =>
          api("DELETE", path(s)).then(() => {
            done();
            props.afterKill?.();
          })
        }
        onError={props.onError}
      />
    </span>
  );
}
