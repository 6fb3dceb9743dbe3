import { useState } from "preact/hooks";
import { api } from "../api";
import { when } from "../format";
import { Action, Problem, Section, usePoll } from "../ui";

type Secret = { name: string; hosts: string[]; created_at: string; updated_at: string };

/**
 * The organization's brokered secrets: a sandbox given one holds a placeholder, and the host's
 * egress proxy puts the value in its place only in HTTPS requests to the secret's hosts. Values
 * are write-only: typed here once, never shown again.
 */
export function Secrets() {
  const list = usePoll(() => api<{ secrets: Secret[] }>("GET", "/v1/secrets").then((r) => r.secrets), []);
  const [problem, setProblem] = useState<unknown>(null);
  const [name, setName] = useState("");
  const [value, setValue] = useState("");
  const [hosts, setHosts] = useState("");
  const [saved, setSaved] = useState<string | undefined>();
  async function save() {
    const hostList = hosts
      .split(/[\s,]+/)
      .map((h) => h.trim())
      .filter(Boolean);
    if (!name.trim() || !value || hostList.length === 0) {
      throw new Error("A secret needs a name, a value and the hosts it is sent to.");
    }
    const made = await api<Secret>("POST", "/v1/secrets", { name: name.trim(), value, hosts: hostList });
    setSaved(made.name);
    setName("");
    setValue("");
    setHosts("");
    list.reload();
  }
  return (
    <>
      <Section title="Store a secret" actions={<Action label="Save secret" kind="primary" testid="save-secret" run={save} onError={setProblem} />}>
        <p class="hint">
          Sandboxes created with <code>{'"secrets": {"ENV_NAME": "secret-name"}'}</code> get a placeholder in ENV_NAME; the value
          is put in its place only in HTTPS requests to these hosts. Saving an existing name replaces its value and hosts.
        </p>
        <div class="form-row">
          <label>
            Name
            <input value={name} data-testid="secret-name" onInput={(e) => setName((e.target as HTMLInputElement).value)} />
          </label>
          <label>
            Value
            <input
              type="password"
              autocomplete="off"
              value={value}
              data-testid="secret-value"
              onInput={(e) => setValue((e.target as HTMLInputElement).value)}
            />
          </label>
          <label>
            Hosts
            <input
              value={hosts}
              placeholder="api.example.com, *.example.org"
              data-testid="secret-hosts"
              onInput={(e) => setHosts((e.target as HTMLInputElement).value)}
            />
          </label>
        </div>
        {saved && <p data-testid="secret-saved">Saved {saved}. Its value is not shown again.</p>}
        <Problem error={problem} />
      </Section>
      <Section title="Secrets">
        <Problem error={list.error} />
        <table data-testid="secrets">
          <thead>
            <tr>
              <th>Name</th>
              <th>Hosts</th>
              <th>Created</th>
              <th>Updated</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {(list.data ?? []).map((s) => (
              <tr key={s.name} data-secret={s.name}>
                <td class="mono">{s.name}</td>
                <td>{s.hosts.length ? s.hosts.join(", ") : "— (named by E2B network rules)"}</td>
                <td>{when(s.created_at)}</td>
                <td>{when(s.updated_at)}</td>
                <td class="row-actions">
                  <Action
                    label="Delete"
                    kind="danger"
                    testid="delete-secret"
                    confirm={`Delete ${s.name}? Running sandboxes keep it until their network is next set.`}
                    run={() => api("DELETE", `/v1/secrets/${encodeURIComponent(s.name)}`).then(list.reload)}
                    onError={setProblem}
                  />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </Section>
    </>
  );
}
