import { useState } from "preact/hooks";
import { api } from "../api";
import { when } from "../format";
import { Action, Problem, Section, usePoll } from "../ui";

type Key = {
  id: string;
  name: string;
  key: string;
  role: string;
  environment: string;
  created_at: string;
  revoked_at?: string | null;
  expires_at?: string | null;
  active: boolean;
  old_key_valid_until?: string;
};

/** When the key stops working: revoked (now or at the end of a rotation's grace) or expiry. */
function retirement(k: Key): string {
  if (k.revoked_at) {
    return Date.parse(k.revoked_at) > Date.now() ? `rotated: works until ${when(k.revoked_at)}` : `revoked ${when(k.revoked_at)}`;
  }
  return k.expires_at ? `expires ${when(k.expires_at)}` : "never expires";
}

/** An organization's API keys (admins only): create, rotate, revoke. A new key is shown once. */
export function Keys() {
  const list = usePoll(() => api<{ data: Key[] }>("GET", "/v1/admin/keys").then((r) => r.data), []);
  const [problem, setProblem] = useState<unknown>(null);
  const [fresh, setFresh] = useState<Key | undefined>();
  const [name, setName] = useState("");
  const [role, setRole] = useState("member");
  const [environment, setEnvironment] = useState("live");
  async function create() {
    if (!name.trim()) throw new Error("Name the key first (who or what will use it).");
    setFresh(await api<Key>("POST", "/v1/admin/keys", { name: name.trim(), role, environment }));
    setName("");
    list.reload();
  }
  return (
    <>
      <Section title="Create an API key" actions={<Action label="Create key" kind="primary" testid="create-key" run={create} onError={setProblem} />}>
        <div class="form-row">
          <label>
            Name
            <input value={name} data-testid="key-name" onInput={(e) => setName((e.target as HTMLInputElement).value)} />
          </label>
          <label>
            Role
            <select value={role} onChange={(e) => setRole((e.target as HTMLSelectElement).value)}>
              <option value="member">member</option>
              <option value="admin">admin</option>
            </select>
          </label>
          <label>
            Environment
            <select value={environment} onChange={(e) => setEnvironment((e.target as HTMLSelectElement).value)}>
              <option value="live">live</option>
              <option value="test">test</option>
            </select>
          </label>
        </div>
        {fresh && (
          <div class="fresh-key" data-testid="fresh-key">
            <p>
              The new key <b>{fresh.name}</b>, shown this once
              {fresh.old_key_valid_until && ` (the key it replaces works until ${when(fresh.old_key_valid_until)})`}:
            </p>
            <code class="secret">{fresh.key}</code>
          </div>
        )}
        <Problem error={problem} />
      </Section>
      <Section title="API keys">
        <Problem error={list.error} />
        <table data-testid="keys">
          <thead>
            <tr>
              <th>Name</th>
              <th>Key</th>
              <th>Role</th>
              <th>Environment</th>
              <th>Created</th>
              <th>Expires / revoked</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {(list.data ?? []).map((k) => (
              <tr key={k.id} class={k.active ? "" : "inactive"} data-key={k.name}>
                <td>{k.name}</td>
                <td class="mono">{k.key}</td>
                <td>{k.role}</td>
                <td>{k.environment}</td>
                <td>{when(k.created_at)}</td>
                <td>{retirement(k)}</td>
                <td class="row-actions">
                  {k.active && (
                    <>
                      <Action
                        label="Rotate"
                        testid="rotate"
                        confirm={`Rotate ${k.name}? The old key keeps working for a day.`}
                        run={async () => {
                          setFresh(await api<Key>("POST", `/v1/admin/keys/${encodeURIComponent(k.id)}/rotate`));
                          list.reload();
                        }}
                        onError={setProblem}
                      />
                      <Action
                        label="Revoke"
                        kind="danger"
                        testid="revoke"
                        confirm={`Revoke ${k.name}? Everything using it stops working at once.`}
                        run={() => api("DELETE", `/v1/admin/keys/${encodeURIComponent(k.id)}`).then(list.reload)}
                        onError={setProblem}
                      />
                    </>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </Section>
    </>
  );
}
