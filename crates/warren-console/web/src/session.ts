// The signed-in API key lives in this tab's sessionStorage only: never in a URL, a cookie or
// the server's logs, and gone when the tab closes.

const KEY = "warren.apiKey";
const ROLE = "warren.admin";

type Listener = (reason?: string) => void;
const listeners = new Set<Listener>();

function notify(reason?: string) {
  for (const l of listeners) l(reason);
}

export const session = {
  key(): string | null {
    return sessionStorage.getItem(KEY);
  },
  isAdmin(): boolean {
    return sessionStorage.getItem(ROLE) === "yes";
  },
  signIn(key: string, admin: boolean) {
    sessionStorage.setItem(KEY, key);
    sessionStorage.setItem(ROLE, admin ? "yes" : "no");
    notify();
  },
  signOut(reason?: string) {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(ROLE);
    notify(reason);
  },
  /** The server refused the key mid-session (revoked, expired): back to the sign-in page. */
  refused() {
    session.signOut("The server no longer accepts this key (revoked or expired). Sign in again.");
  },
  subscribe(l: Listener): () => void {
    listeners.add(l);
    return () => listeners.delete(l);
  },
};
