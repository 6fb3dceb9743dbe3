// Small building blocks shared by the pages.
import type { ComponentChildren } from "preact";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { ApiError } from "./api";

export function message(e: unknown): string {
  if (e instanceof ApiError) return e.status ? `${e.message} (${e.code}, HTTP ${e.status})` : e.message;
  return e instanceof Error ? e.message : String(e);
}

export function Problem({ error }: { error: unknown }) {
  if (!error) return null;
  return (
    <div class="problem" role="alert">
      {message(error)}
    </div>
  );
}

/** Loads `load()` now and every `everyMs` (if given) while the page is shown. */
export function usePoll<T>(load: () => Promise<T>, deps: unknown[], everyMs?: number) {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(null);
  const latest = useRef(load);
  latest.current = load;
  const reload = useCallback(async () => {
    try {
      setData(await latest.current());
      setError(null);
    } catch (e) {
      setError(e);
    }
  }, []);
  useEffect(() => {
    setData(undefined);
    reload();
    if (!everyMs) return;
    const timer = setInterval(reload, everyMs);
    return () => clearInterval(timer);
  }, deps);
  return { data, error, reload };
}

/** A button that runs an action, shows that it is running, and reports its failure. */
export function Action(props: {
  label: string;
  run: () => Promise<unknown>;
  onError: (e: unknown) => void;
  kind?: "danger" | "primary";
  confirm?: string;
  testid?: string;
}) {
  const [busy, setBusy] = useState(false);
  return (
    <button
      class={props.kind ?? ""}
      disabled={busy}
      data-testid={props.testid}
      onClick={async () => {
        if (props.confirm && !window.confirm(props.confirm)) return;
        setBusy(true);
        try {
          await props.run();
          props.onError(null);
        } catch (e) {
          props.onError(e);
        } finally {
          setBusy(false);
        }
      }}
    >
      {busy ? `${props.label}…` : props.label}
    </button>
  );
}

export function Status({ value }: { value: string }) {
  return <span class={`status status-${value}`}>{value}</span>;
}

export function Section(props: { title: string; children: ComponentChildren; actions?: ComponentChildren }) {
  return (
    <section class="card">
      <header>
        <h2>{props.title}</h2>
        <div class="actions">{props.actions}</div>
      </header>
      {props.children}
    </section>
  );
}
