//! How each language's code is turned into a process. Code goes into a file (a single argv string
//! is limited to 128 KiB by the kernel), which is removed after the run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);
const SCRATCH: &str = "/tmp/.warren";

pub struct Prepared {
    pub program: String,
    pub args: Vec<String>,
    /// File or directory to remove after the run.
    pub cleanup: PathBuf,
}

/// The canonical name of a language (the SDKs' aliases included), or `None` if unsupported.
pub fn canonical(language: &str) -> Option<&'static str> {
    Some(match language.to_ascii_lowercase().as_str() {
        "python" | "python3" | "py" => "python",
        "javascript" | "js" | "node" | "nodejs" => "javascript",
        "bash" | "sh" | "shell" => "bash",
        "go" | "golang" => "go",
        _ => return None,
    })
}

pub const SUPPORTED: &str = "python, javascript (node), bash, go";

pub fn prepare(language: &'static str, code: &str) -> std::io::Result<Prepared> {
    std::fs::create_dir_all(SCRATCH)?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let stem = Path::new(SCRATCH).join(format!("exec-{}-{n}", std::process::id()));
    let (program, file, cleanup) = match language {
        "python" => (
            "python3",
            stem.with_extension("py"),
            stem.with_extension("py"),
        ),
        "javascript" => ("node", stem.with_extension("js"), stem.with_extension("js")),
        "bash" => ("bash", stem.with_extension("sh"), stem.with_extension("sh")),
        _ => {
            std::fs::create_dir_all(&stem)?;
            let main = stem.join("main.go");
            std::fs::write(&main, wrap_go(code))?;
            let args = vec!["run".to_owned(), main.to_string_lossy().into_owned()];
            return Ok(Prepared {
                program: "go".to_owned(),
                args,
                cleanup: stem,
            });
        }
    };
    std::fs::write(&file, code)?;
    Ok(Prepared {
        program: program.to_owned(),
        args: vec![file.to_string_lossy().into_owned()],
        cleanup,
    })
}

/// Lets a user send a bare Go snippet: adds `package main` and, when there is no `func main`, puts
/// the statements after the imports into one.
fn wrap_go(code: &str) -> String {
    let has_package = code.lines().any(|l| l.trim_start().starts_with("package "));
    if has_package {
        return code.to_owned();
    }
    if code.contains("func main(") {
        return format!("package main\n\n{code}\n");
    }
    let mut imports = Vec::new();
    let mut body = Vec::new();
    let mut in_block = false;
    for line in code.lines() {
        let t = line.trim_start();
        if in_block {
            imports.push(line);
            in_block = !t.starts_with(')');
        } else if t.starts_with("import (") {
            imports.push(line);
            in_block = true;
        } else if t.starts_with("import ") {
            imports.push(line);
        } else {
            body.push(line);
        }
    }
    format!(
        "package main\n\n{}\n\nfunc main() {{\n{}\n}}\n",
        imports.join("\n"),
        body.join("\n")
    )
}

pub fn cleanup(p: &Prepared) {
    let _ = if p.cleanup.is_dir() {
        std::fs::remove_dir_all(&p.cleanup)
    } else {
        std::fs::remove_file(&p.cleanup)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_map_to_one_language() {
        assert_eq!(canonical("python3"), Some("python"));
        assert_eq!(canonical("NodeJS"), Some("javascript"));
        assert_eq!(canonical("sh"), Some("bash"));
        assert_eq!(canonical("cobol"), None);
    }

    #[test]
    fn go_snippets_get_a_main() {
        let w = wrap_go("import \"fmt\"\nfmt.Println(1)");
        assert!(w.starts_with("package main"));
        assert!(w.contains("func main() {\nfmt.Println(1)\n}"));
        assert!(w.find("import").unwrap_or(usize::MAX) < w.find("func main").unwrap_or(0));
        let full = "package main\nfunc main() {}";
        assert_eq!(wrap_go(full), full);
    }
}
