import { useEffect, useState } from "preact/hooks";
import { api } from "../api";
import { when } from "../format";
import { Problem, Section } from "../ui";

type AuditEvent = {
  seq: number;
  at: string;
  key_id?: string;
  sandbox_id?: string;
  action: string;
  input_bytes?: number;
  outcome: string;
  status_code?: number;
  duration_ms?: number;
  request_id?: string;
};

type Filters = { sandbox_id: string; action: string; key_id: string; since: string; until: string };
const EMPTY: Filters = { sandbox_id: "", action: "", key_id: "", since: "", until: "" };

function query(f: Filters, cursor?: string): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(f)) {
    if (!v.trim()) continue;
    // datetime-local inputs have no zone: they mean the browser's.
    q.set(k, k === "since" || k === "until" ? new Date(v).toISOString() : v.trim());
  }
  if (cursor) q.set("cursor", cursor);
  q.set("limit", "100");
  return q.toString();
}

/** The organization's audit trail (admins only), filtered, 100 events at a time. */
export function Audit() {
  const [form, setForm] = useState<Filters>(EMPTY);
  const [applied, setApplied] = useState<Filters>(EMPTY);
  const [events, setEvents] = useState<AuditEvent[]>([]);
  const [next, setNext] = useState<string | undefined>();
  const [problem, setProblem] = useState<unknown>(null);
  async function load(f: Filters, cursor?: string) {
    try {
      const r = await api<{ data: AuditEvent[]; next_cursor?: string | null }>("GET", `/v1/audit?${query(f, cursor)}`);
      setEvents((old) => (cursor ? [...old, ...r.data] : r.data));
      setNext(r.next_cursor ?? undefined);
      setProblem(null);
    } catch (e) {
      setProblem(e);
    }
  }
  useEffect(() => {
    load(applied);
  }, [applied]);
  const onInput = (name: keyof Filters) => (e: Event) => setForm({ ...form, [name]: (e.target as HTMLInputElement).value });
  const field = (name: keyof Filters, label: string) => (
    <label>
      {label}
      <input value={form[name]} data-testid={`filter-${name}`} onInput={onInput(name)} />
    </label>
  );
  const time = (name: keyof Filters, label: string) => (
    <label>
      {label}
      <input type="datetime-local" value={form[name]} data-testid={`filter-${name}`} onInput={onInput(name)} />
    </label>
  );
  return (
    <Section title="Audit trail">
      <form
        class="form-row"
        onSubmit={(e) => {
          e.preventDefault();
          setApplied({ ...form });
        }}
      >
        {field("sandbox_id", "Sandbox")}
        {field("action", "Action")}
        {field("key_id", "Key id")}
        {time("since", "Since")}
        {time("until", "Until")}
        <button class="primary" type="submit" data-testid="apply-filters">
          Filter
        </button>
        <button type="button" onClick={() => (setForm(EMPTY), setApplied(EMPTY))}>
          Clear
        </button>
      </form>
      <Problem error={problem} />
      <table data-testid="audit">
        <thead>
          <tr>
            <th>When</th>
            <th>Action</th>
            <th>Sandbox</th>
            <th>Key</th>
            <th>Outcome</th>
            <th>Status</th>
            <th>Input</th>
            <th>Duration</th>
          </tr>
        </thead>
        <tbody>
          {events.map((e) => (
            <tr key={e.seq} data-action={e.action}>
              <td>{when(e.at)}</td>
              <td class="mono">{e.action}</td>
              <td class="mono">{e.sandbox_id ?? "—"}</td>
              <td class="mono">{e.key_id ?? "—"}</td>
              <td>{e.outcome}</td>
              <td>{e.status_code ?? "—"}</td>
              <td>{e.input_bytes !== undefined && e.input_bytes !== null ? `${e.input_bytes} B` : "—"}</td>
              <td>{e.duration_ms !== undefined && e.duration_ms !== null ? `${e.duration_ms} ms` : "—"}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {events.length === 0 && !problem && <p class="empty">No events match.</p>}
      {next && <button onClick={() => load(applied, next)}>Older events</button>}
    </Section>
  );
}
