import { useState } from "preact/hooks";
import { ApiError, checkKey } from "../api";
import { session } from "../session";
import { message } from "../ui";

export function SignIn({ notice }: { notice?: string }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState<string | undefined>(notice);
  const [busy, setBusy] = useState(false);
  async function submit(e: Event) {
    e.preventDefault();
    const k = key.trim();
    if (!k) return setError("Paste an API key first.");
    setBusy(true);
    try {
      session.signIn(k, (await checkKey(k)).admin);
    } catch (err) {
      setError(err instanceof ApiError && err.status === 401 ? "This key was refused: it is unknown, revoked or expired." : message(err));
    } finally {
      setBusy(false);
    }
  }
  return (
    <div class="signin">
      <form onSubmit={submit}>
        <h1>Warren</h1>
        <p>Sign in with an API key (the one in <code>HOPX_API_KEY</code>). It stays in this browser tab only.</p>
        <input
          type="password"
          name="api-key"
          autocomplete="off"
          placeholder="API key"
          aria-label="API key"
          value={key}
          onInput={(e) => setKey((e.target as HTMLInputElement).value)}
        />
        <button class="primary" type="submit" disabled={busy}>
          {busy ? "Checking…" : "Sign in"}
        </button>
        {error && (
          <div class="problem" role="alert">
            {error}
          </div>
        )}
      </form>
    </div>
  );
}
