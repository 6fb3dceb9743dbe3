import { useState } from "preact/hooks";
import { agent, agentFetch } from "../api";
import { bytes, when } from "../format";
import { Action, Problem, usePoll } from "../ui";

type Entry = { name: string; path: string; size: number; is_dir: boolean; modified?: string; permissions?: string };

function parent(path: string): string {
  const p = path.replace(/\/+$/, "").split("/").slice(0, -1).join("/");
  return p || "/";
}

function join(dir: string, name: string): string {
  return `${dir.replace(/\/+$/, "")}/${name}`;
}

/** Browses the sandbox's files through its agent: list, upload, download, delete. */
export function Files({ id }: { id: string }) {
  const [dir, setDir] = useState("/workspace");
  const [typed, setTyped] = useState("/workspace");
  const [problem, setProblem] = useState<unknown>(null);
  const list = usePoll(
    () => agent<{ files: Entry[] }>(id, "GET", `/files/list?path=${encodeURIComponent(dir)}`).then((r) => r.files),
    [id, dir],
  );
  const open = (d: string) => {
    setDir(d);
    setTyped(d);
  };
  async function download(e: Entry) {
    const res = await agentFetch(id, "GET", `/files/download?path=${encodeURIComponent(e.path)}`);
    const url = URL.createObjectURL(await res.blob());
    const a = document.createElement("a");
    a.href = url;
    a.download = e.name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }
  async function upload(input: HTMLInputElement) {
    const files = Array.from(input.files ?? []);
    try {
      for (const f of files) {
        const form = new FormData();
        form.append("file", f, f.name);
        form.append("path", join(dir, f.name));
        await agentFetch(id, "POST", "/files/upload", form);
      }
      setProblem(null);
    } catch (e) {
      setProblem(e);
    } finally {
      input.value = "";
      list.reload();
    }
  }
  const entries = [...(list.data ?? [])].sort((a, b) => Number(b.is_dir) - Number(a.is_dir) || a.name.localeCompare(b.name));
  return (
    <div data-testid="files">
      <form
        class="form-row"
        onSubmit={(e) => {
          e.preventDefault();
          open(typed.trim() || "/");
        }}
      >
        <input class="grow mono" value={typed} aria-label="Directory" onInput={(e) => setTyped((e.target as HTMLInputElement).value)} />
        <button type="submit">Open</button>
        <button type="button" onClick={() => open(parent(dir))} disabled={dir === "/"}>
          Up
        </button>
        <label class="upload">
          Upload files
          <input type="file" multiple data-testid="upload" onChange={(e) => upload(e.target as HTMLInputElement)} />
        </label>
      </form>
      <Problem error={problem ?? list.error} />
      <table>
        <thead>
          <tr>
            <th>Name</th>
            <th>Size</th>
            <th>Permissions</th>
            <th>Modified</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {entries.map((e) => (
            <tr key={e.path} data-file={e.name}>
              <td class="mono">
                {e.is_dir ? (
                  <a href="javascript:void 0" onClick={() => open(e.path)}>
                    {e.name}/
                  </a>
                ) : (
                  e.name
                )}
              </td>
              <td>{e.is_dir ? "—" : bytes(e.size)}</td>
              <td class="mono">{e.permissions ?? ""}</td>
              <td>{when(e.modified)}</td>
              <td class="row-actions">
                {!e.is_dir && <Action label="Download" testid="download" run={() => download(e)} onError={setProblem} />}
                <Action
                  label="Delete"
                  kind="danger"
                  confirm={`Delete ${e.path}${e.is_dir ? " and everything in it" : ""}?`}
                  run={() => agent(id, "DELETE", `/files/remove?path=${encodeURIComponent(e.path)}`).then(list.reload)}
                  onError={setProblem}
                />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {list.data && entries.length === 0 && <p class="empty">This directory is empty.</p>}
    </div>
  );
}
