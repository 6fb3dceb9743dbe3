import { useEffect, useRef, useState } from "preact/hooks";
import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import "@xterm/xterm/css/xterm.css";
import { terminalSocket } from "../api";
import { message } from "../ui";

/** The sandbox's interactive shell over the agent's `/terminal` WebSocket (wire spec §6.2). */
export function TerminalView({ id }: { id: string }) {
  const host = useRef<HTMLDivElement>(null);
  const [state, setState] = useState("connecting");
  useEffect(() => {
    if (!host.current) return;
    const term = new Terminal({ cursorBlink: true, fontSize: 13, convertEol: false, scrollback: 5000 });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(host.current);
    fit.fit();
    let ws: WebSocket | undefined;
    let closed = false;
    const send = (msg: object) => ws?.readyState === WebSocket.OPEN && ws.send(JSON.stringify(msg));
    const resize = () => {
      fit.fit();
      send({ type: "resize", cols: term.cols, rows: term.rows });
    };
    terminalSocket(id)
      .then((socket) => {
        if (closed) return socket.close();
        ws = socket;
        socket.onopen = () => {
          setState("connected");
          resize();
          term.focus();
        };
        socket.onmessage = (ev) => {
          try {
            const msg = JSON.parse(ev.data);
            if (msg.type === "output") term.write(msg.data);
            else if (msg.type === "exit") {
              term.write(`\r\n[the shell exited with code ${msg.code}]\r\n`);
              setState("exited");
            }
          } catch {
            term.write(String(ev.data));
          }
        };
        socket.onclose = () => setState((s) => (s === "exited" ? s : "disconnected"));
        socket.onerror = () => setState("failed to connect");
      })
      .catch((e) => setState(`failed: ${message(e)}`));
    const input = term.onData((data) => send({ type: "input", data }));
    addEventListener("resize", resize);
    return () => {
      closed = true;
      removeEventListener("resize", resize);
      input.dispose();
      ws?.close();
      term.dispose();
    };
  }, [id]);
  return (
    <div>
      <p class="muted" data-testid="terminal-state">
        Terminal: {state}
      </p>
      <div class="terminal" ref={host} data-testid="terminal" />
    </div>
  );
}
