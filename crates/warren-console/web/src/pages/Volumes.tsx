import { useState } from "preact/hooks";
import { api, type Volume } from "../api";
import { when } from "../format";
import { Action, Problem, Section, usePoll } from "../ui";

/**
 * The organization's persistent volumes: files that outlive sandboxes, shared by every sandbox
 * that mounts one. Sizes are limits (a full volume is ENOSPC inside the sandbox); a volume a
 * sandbox mounts cannot be deleted.
 */
export function Volumes() {
  const list = usePoll(() => api<{ volumes: Volume[] }>("GET", "/v1/volumes").then((r) => r.volumes), []);
  const [problem, setProblem] = useState<unknown>(null);
  const [name, setName] = useState("");
  const [size, setSize] = useState("10240");
  async function create() {
    if (!name.trim()) throw new Error("A volume needs a name.");
    const sizeMb = Number(size);
    if (!Number.isInteger(sizeMb) || sizeMb <= 0) throw new Error("The size is a whole number of MB.");
    await api<Volume>("POST", "/v1/volumes", { name: name.trim(), size_mb: sizeMb });
    setName("");
    list.reload();
  }
  return (
    <>
      <Section title="Create a volume" actions={<Action label="Create volume" kind="primary" testid="create-volume" run={create} onError={setProblem} />}>
        <p class="hint">
          Mount it with <code>{'"volumes": [{"name": "data", "path": "/data"}]'}</code> on a create, or E2B's{" "}
          <code>volume_mounts</code>. Many sandboxes may mount one volume at once; copies of a snapshot mount what their source did.
        </p>
        <div class="form-row">
          <label>
            Name
            <input value={name} data-testid="volume-name" onInput={(e) => setName((e.target as HTMLInputElement).value)} />
          </label>
          <label>
            Size (MB)
            <input value={size} data-testid="volume-size" onInput={(e) => setSize((e.target as HTMLInputElement).value)} />
          </label>
        </div>
        <Problem error={problem} />
      </Section>
      <Section title="Volumes">
        <Problem error={list.error} />
        <table data-testid="volumes">
          <thead>
            <tr>
              <th>Name</th>
              <th>Id</th>
              <th>Size</th>
              <th>Created</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {(list.data ?? []).map((v) => (
              <tr key={v.id} data-volume={v.name}>
                <td class="mono">{v.name}</td>
                <td class="mono">{v.id}</td>
                <td>{v.size_mb} MB</td>
                <td>{when(v.created_at)}</td>
                <td class="row-actions">
                  <Action
                    label="Delete"
                    kind="danger"
                    testid="delete-volume"
                    confirm={`Delete ${v.name} and its files?`}
                    run={() => api("DELETE", `/v1/volumes/${encodeURIComponent(v.id)}`).then(list.reload)}
                    onError={setProblem}
                  />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        {list.data?.length === 0 && <p class="empty">No volumes yet.</p>}
      </Section>
    </>
  );
}
