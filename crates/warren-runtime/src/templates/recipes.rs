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
    pub packages: &'static [&'static str],
}

const BASE_PACKAGES: &[&str] = &["python3", "ca-certificates", "procps"];
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
];

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
            packages: BASE_PACKAGES,
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
            packages: CODE_INTERPRETER_PACKAGES,
        },
    ]
}
