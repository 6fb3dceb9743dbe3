use warren_core::Resources;

/// A built-in template: Debian packages on a minimal Debian.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub id: &'static str,
    pub name: &'static str,
    pub display_name: &'static str,
    pub description: &'static str,
    pub category: &'static str,
    pub language: &'static str,
    pub resources: Resources,
    pub suite: &'static str,
    /// Installed with apt after `debootstrap --variant=minbase`. (`debootstrap --include` cannot
    /// resolve virtual packages, which numpy & co. pull in.)
    pub packages: Vec<&'static str>,
    /// Files written into the root file system after the packages: (path, content, mode).
    pub files: &'static [(&'static str, &'static str, u32)],
    /// Run in the background when a sandbox starts, for as long as it runs.
    pub start_cmd: Option<&'static str>,
    /// A shell command that succeeds once the sandbox is ready; create answers after it does.
    pub ready_cmd: Option<&'static str>,
}

/// Besides Python: what agents' setup steps and E2B's `git` module run first (git, curl), and
/// `ss` (iproute2), which E2B's `wait_for_port` ready check runs.
const BASE_PACKAGES: &[&str] = &[
    "python3",
    "ca-certificates",
    "procps",
    "git",
    "curl",
    "iproute2",
];
const CODE_INTERPRETER_PACKAGES: &[&str] = &[
    "python3",
    "python3-numpy",
    "python3-pandas",
    "python3-matplotlib",
    // What code-interpreter users reach for next (the vendor's cookbook uses them): interactive
    // charts, machine learning, HTTP, and pip for the rest (sandboxes may install into the
    // system's Python: see `builder`).
    "python3-plotly",
    "python3-sklearn",
    "python3-requests",
    "python3-pip",
    // The stateful interpreter behind run_code (IPython's shell: display hooks, magics).
    "python3-ipython",
    "nodejs",
    "golang-go",
    "ca-certificates",
    "procps",
    "git",
    "curl",
    "iproute2",
];

/// What a computer-use agent needs on top of `code-interpreter` (the Hopx SDK's install hint
/// names most of them): a virtual X server that is also the VNC server (TigerVNC's Xvnc, which
/// resizes on request), a light window manager and panel, a terminal and a browser, the X tools
/// the desktop API drives, ffmpeg for recordings, tesseract for OCR, and noVNC's viewer.
const DESKTOP_PACKAGES: &[&str] = &[
    "tigervnc-standalone-server",
    "tigervnc-tools",
    "novnc",
    "openbox",
    "tint2",
    "xterm",
    "firefox-esr",
    "xdotool",
    "wmctrl",
    "xclip",
    "x11-xserver-utils",
    "x11-utils",
    "imagemagick",
    "ffmpeg",
    "tesseract-ocr",
    "tesseract-ocr-eng",
    "fonts-dejavu-core",
    // What E2B's desktop SDK (e2b-desktop, @e2b/desktop) drives on the same template: its own X
    // server on :0 (Xvfb, checked with xdpyinfo), an Xfce session, x11vnc behind noVNC's
    // proxy for its stream, scrot for screenshots, xdg-open and gtk-launch for `open`/`launch`.
    "xvfb",
    "xauth",
    "xfce4",
    "xfce4-terminal",
    "dbus-x11",
    "x11vnc",
    "scrot",
    "xdg-utils",
    "libgtk-3-bin",
];

/// E2B's desktop SDK runs noVNC from `/opt/noVNC` (where E2B's image keeps it):
/// `cd /opt/noVNC/utils && ./novnc_proxy … --web /opt/noVNC`. Debian's is in /usr/share/novnc.
const E2B_NOVNC_PROXY_PATH: &str = "/opt/noVNC/utils/novnc_proxy";
const E2B_NOVNC_PROXY: &str = r##"#!/bin/sh
# noVNC's proxy at the path E2B's desktop SDK runs it from; the web root is Debian's.
for a in "$@"; do
  case "$a" in /opt/noVNC*) a="/usr/share/novnc${a#/opt/noVNC}" ;; esac
  set -- "$@" "$a"
  shift
done
exec /usr/share/novnc/utils/novnc_proxy "$@"
"##;

/// The desktop's start command (see `DESKTOP_START`).
const DESKTOP_START_PATH: &str = "/usr/local/bin/warren-desktop";

/// Starts display :1 as the unprivileged `user`: Xvnc (X server and VNC server in one, VNC on
/// loopback only: the agent's token-checked WebSocket is the way in), then the window manager
/// (one workspace, so a scroll on the background cannot move the user to an empty one) and the
/// panel, with screen blanking off (a blank screenshot after ten idle minutes helps nobody). Logs
/// go where `/desktop/debug/logs` reads them.
const DESKTOP_START: &str = r##"#!/bin/sh
# Warren's desktop: display :1 for the sandbox's unprivileged user (the template's start command).
set -u
logs=/tmp/warren-desktop
rm -f "$logs/ready"
mkdir -p /tmp/.X11-unix "$logs"
chmod 1777 /tmp/.X11-unix
chown user:user "$logs"
size=${WARREN_DESKTOP_SIZE:-1280x800}
exec setpriv --reuid=user --regid=user --init-groups env HOME=/home/user USER=user DISPLAY=:1 sh -c '
  Xvnc :1 -geometry "$0" -depth 24 -localhost -rfbport 5901 -SecurityTypes None \
    -AlwaysShared -AcceptSetDesktopSize -nolisten tcp -ac >"$1/xvnc.log" 2>&1 &
  for _ in $(seq 1000); do [ -S /tmp/.X11-unix/X1 ] && break; sleep 0.005; done
  openbox >"$1/openbox.log" 2>&1 &
  (xsetroot -solid "#2f3b4c"; xset s off) >/dev/null 2>&1 &
  for _ in $(seq 2000); do wmctrl -m >/dev/null 2>&1 && break; sleep 0.005; done
  tint2 >"$1/tint2.log" 2>&1 &
  touch "$1/ready"
  wmctrl -n 1
  wait' "$size" "$logs"
"##;

pub fn builtin_recipes() -> Vec<Recipe> {
    vec![
        Recipe {
            id: "1",
            name: "base",
            display_name: "Base (Debian 12)",
            description: "Minimal Debian 12 with Python 3 and bash",
            category: "operating-system",
            language: "bash",
            resources: Resources {
                vcpu: 1,
                memory_mb: 512,
                disk_mb: 2048,
            },
            suite: "bookworm",
            packages: BASE_PACKAGES.to_vec(),
            files: &[],
            start_cmd: None,
            ready_cmd: None,
        },
        Recipe {
            id: "2",
            name: "code-interpreter",
            display_name: "Code Interpreter",
            description: "Python 3 with numpy, pandas, matplotlib, plotly, scikit-learn, requests and pip; Node.js; bash; Go",
            category: "code-interpreter",
            language: "python",
            resources: Resources {
                vcpu: 2,
                memory_mb: 2048,
                disk_mb: 4096,
            },
            suite: "bookworm",
            packages: CODE_INTERPRETER_PACKAGES.to_vec(),
            files: &[],
            start_cmd: None,
            ready_cmd: None,
        },
        Recipe {
            id: "3",
            name: "desktop",
            display_name: "Desktop",
            // Short: the hopx CLI's JSON output breaks lines longer than its console (a long
            // description put a line break inside a JSON string).
            description: "A graphical desktop on display :1 (VNC, window manager, xterm, Firefox) with the code-interpreter's Python, Node.js and Go, for computer-use agents",
            category: "desktop",
            language: "python",
            resources: Resources {
                vcpu: 2,
                memory_mb: 4096,
                disk_mb: 8192,
            },
            suite: "bookworm",
            packages: [CODE_INTERPRETER_PACKAGES, DESKTOP_PACKAGES].concat(),
            files: &[
                (DESKTOP_START_PATH, DESKTOP_START, 0o755),
                (E2B_NOVNC_PROXY_PATH, E2B_NOVNC_PROXY, 0o755),
            ],
            start_cmd: Some(DESKTOP_START_PATH),
            // Written once the X server and the window manager are up and the panel started:
            // windows opened from then on are managed.
            ready_cmd: Some("test -e /tmp/warren-desktop/ready"),
        },
    ]
}
