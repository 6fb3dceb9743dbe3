import { useEffect, useState } from "preact/hooks";
import { agent } from "../api";
import { when } from "../format";
import { Action, Problem, Status, usePoll } from "../ui";

type Proc = { process_id: string; name?: string; command?: string; status: string; pid?: number; start_time?: string; exit_code?: number | null };

/** Background processes (started by the SDKs or here) and the output of the one selected. */
export function Processes({ id }: { id: string }) {
  const list = usePoll(() => agent<{ processes: Proc[] }>(id, "GET", "/execute/processes").then((r) => r.processes ?? []), [id], 3000);
  const [selected, setSelected] = useState<string | undefined>();
  const [command, setCommand] = useState("");
  const [problem, setProblem] = useState<unknown>(null);
  async function start() {
    if (!command.trim()) throw new Error("Type a command to run in the background first.");
    const r = await agent<{ process_id: string }>(id, "POST", "/commands/background", {
      command: "bash",
      args: ["-c", command],
      timeout: 3600,
      workdir: "/workspace",
    });
    setCommand("");
    setSelected(r.process_id);
    list.reload();
  }
  return (
    <div data-testid="processes">
      <div class="form-row">
        <input
          class="grow mono"
          placeholder="a command to run in the background, e.g. python3 -m http.server 8000"
          aria-label="Background command"
          value={command}
          onInput={(e) => setCommand((e.target as HTMLInputElement).value)}
        />
        <Action label="Start" kind="primary" testid="start-process" run={start} onError={setProblem} />
      </div>
      <Problem error={problem ?? list.error} />
      <table>
        <thead>
          <tr>
            <th>Process</th>
            <th>Command</th>
            <th>Status</th>
            <th>PID</th>
            <th>Started</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {(list.data ?? []).map((p) => (
            <tr key={p.process_id} class={selected === p.process_id ? "selected" : ""}>
              <td class="mono">
                <a href="javascript:void 0" onClick={() => setSelected(p.process_id)}>
                  {p.name || p.process_id}
                </a>
              </td>
              <td class="mono clip">{p.command ?? ""}</td>
              <td>
                <Status value={p.status} /> {p.exit_code !== undefined && p.exit_code !== null && `(exit ${p.exit_code})`}
              </td>
              <td>{p.pid ?? "—"}</td>
              <td>{when(p.start_time)}</td>
              <td class="row-actions">
                {p.status === "running" && (
                  <Action
                    label="Kill"
                    kind="danger"
                    run={() => agent(id, "POST", `/execute/kill/${encodeURIComponent(p.process_id)}`).then(list.reload)}
                    onError={setProblem}
                  />
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {list.data && list.data.length === 0 && <p class="empty">No background processes.</p>}
      {selected && <Output id={id} process={selected} />}
    </div>
  );
}

/** A process's output, followed from where the last read ended. */
function Output({ id, process }: { id: string; process: string }) {
  const [out, setOut] = useState({ stdout: "", stderr: "", status: "" });
  const [problem, setProblem] = useState<unknown>(null);
  useEffect(() => {
    let offsets = { stdout: 0, stderr: 0 };
    let stop = false;
    setOut({ stdout: "", stderr: "", status: "" });
    async function poll() {
      try {
        const p = await agent(
          id,
          "GET",
          `/execute/processes/${encodeURIComponent(process)}?stdout_offset=${offsets.stdout}&stderr_offset=${offsets.stderr}`,
        );
        if (stop) return;
        offsets = { stdout: p.stdout_next_offset ?? 0, stderr: p.stderr_next_offset ?? 0 };
        setOut((o) => ({ stdout: o.stdout + (p.stdout ?? ""), stderr: o.stderr + (p.stderr ?? ""), status: p.status }));
        setProblem(null);
      } catch (e) {
        setProblem(e);
      }
    }
    poll();
    const timer = setInterval(poll, 1500);
    return () => {
      stop = true;
      clearInterval(timer);
    };
  }, [id, process]);
  return (
    <div class="output">
      <h3>
        Output of <span class="mono">{process}</span> {out.status && <Status value={out.status} />}
      </h3>
      <Problem error={problem} />
      <pre data-testid="process-stdout">{out.stdout || "(no output yet)"}</pre>
      {out.stderr && <pre class="stderr">{out.stderr}</pre>}
    </div>
  );
}
