import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import "./style.css";
import { session } from "./session";
import { go, useRoute } from "./route";
import { SignIn } from "./pages/SignIn";
import { Sandboxes } from "./pages/Sandboxes";
import { SandboxPage } from "./pages/SandboxPage";
import { Templates } from "./pages/Templates";
import { Keys } from "./pages/Keys";
import { Secrets } from "./pages/Secrets";
import { Volumes } from "./pages/Volumes";
import { Audit } from "./pages/Audit";

function App() {
  const [key, setKey] = useState(session.key());
  const [notice, setNotice] = useState<string | undefined>();
  const route = useRoute();
  useEffect(
    () =>
      session.subscribe((reason) => {
        setKey(session.key());
        setNotice(reason);
      }),
    [],
  );
  if (!key) return <SignIn notice={notice} />;
  const [page = "sandboxes", id] = route;
  const admin = session.isAdmin();
  const nav = [
    ["sandboxes", "Sandboxes"],
    ["templates", "Templates"],
    ["secrets", "Secrets"],
    ["volumes", "Volumes"],
    ...(admin
      ? [
          ["keys", "API keys"],
          ["audit", "Audit trail"],
        ]
      : []),
  ];
  let body;
  if (page === "sandboxes" && id) body = <SandboxPage id={id} />;
  else if (page === "templates") body = <Templates />;
  else if (page === "secrets") body = <Secrets />;
  else if (page === "volumes") body = <Volumes />;
  else if (page === "keys" && admin) body = <Keys />;
  else if (page === "audit" && admin) body = <Audit />;
  else body = <Sandboxes />;
  return (
    <div class="shell">
      <nav>
        <a class="brand" href="#/sandboxes">
          Warren
        </a>
        {nav.map(([name, label]) => (
          <a href={`#/${name}`} class={page === name ? "active" : ""} data-testid={`nav-${name}`}>
            {label}
          </a>
        ))}
        <span class="spacer" />
        <span class="role">{admin ? "admin key" : "member key"}</span>
        <button data-testid="sign-out" onClick={() => (session.signOut(), go())}>
          Sign out
        </button>
      </nav>
      <main>{body}</main>
    </div>
  );
}

const root = document.getElementById("app");
if (root) render(<App />, root);
