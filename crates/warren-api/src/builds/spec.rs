//! The build request in both SDK dialects (spec §3.9) and its steps. What a build produces is a
//! `TemplateSpec` (`crate::template_spec`).

use serde::Deserialize;
use serde_json::Value;

pub use crate::template_spec::{ReadyCheck, TemplateSpec};

/// One build step, normalised from either dialect.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Run(String),
    Copy {
        sources: Vec<String>,
        dest: String,
        files_hash: String,
        owner: Option<String>,
        permissions: Option<String>,
    },
    Env(String, String),
    Workdir(String),
    User(String),
    Cmd(String),
}

/// A step of a build request that cannot be run as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    #[error("{kind} step needs argument {n}")]
    MissingArgument { kind: String, n: usize },
    #[error("unknown step type {0:?}")]
    Unknown(String),
}

impl Step {
    pub fn parse(v: &Value) -> Result<(Step, bool), StepError> {
        let kind = v["type"].as_str().unwrap_or("").to_ascii_uppercase();
        let args: Vec<String> = v["args"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let arg = |i: usize| {
            args.get(i)
                .cloned()
                .ok_or_else(|| StepError::MissingArgument {
                    kind: kind.clone(),
                    n: i + 1,
                })
        };
        let skip = v["skipCache"].as_bool().unwrap_or(false);
        let step = match kind.as_str() {
            "RUN" => Step::Run(args.join(" ")),
            "COPY" => Step::Copy {
                sources: arg(0)?.split(',').map(str::to_owned).collect(),
                dest: arg(1)?,
                files_hash: v["filesHash"].as_str().unwrap_or("").to_owned(),
                owner: v["owner"].as_str().map(str::to_owned),
                permissions: v["permissions"].as_str().map(str::to_owned),
            },
            // Py: args [k, v]; JS: {key, value}
            "ENV" => match (v["key"].as_str(), v["value"].as_str()) {
                (Some(k), Some(val)) => Step::Env(k.to_owned(), val.to_owned()),
                _ => Step::Env(arg(0)?, arg(1)?),
            },
            "WORKDIR" => Step::Workdir(
                v["path"]
                    .as_str()
                    .map_or_else(|| arg(0), |p| Ok(p.to_owned()))?,
            ),
            "USER" => Step::User(arg(0)?),
            "CMD" => Step::Cmd(args.join(" ")),
            other => return Err(StepError::Unknown(other.to_owned())),
        };
        Ok((step, skip))
    }

    pub fn describe(&self) -> String {
        match self {
            Step::Run(c) => format!("RUN {c}"),
            Step::Copy { sources, dest, .. } => format!("COPY {} {dest}", sources.join(" ")),
            Step::Env(k, _) => format!("ENV {k}=…"),
            Step::Workdir(p) => format!("WORKDIR {p}"),
            Step::User(u) => format!("USER {u}"),
            Step::Cmd(c) => format!("CMD {c}"),
        }
    }
}

/// `POST /v1/templates/build`.
#[derive(Debug, Deserialize)]
pub struct BuildRequest {
    pub name: String,
    #[serde(default)]
    pub from_image: Option<String>,
    #[serde(default)]
    pub steps: Vec<Value>,
    #[serde(default, rename = "startCmd")]
    pub start_cmd: Option<String>,
    #[serde(default, rename = "readyCmd")]
    pub ready_cmd: Option<ReadyCheck>,
    #[serde(default)]
    pub cpu: Option<u32>,
    #[serde(default)]
    pub memory: Option<u32>,
    #[serde(default, rename = "diskGB")]
    pub disk_gb: Option<u32>,
    #[serde(default, rename = "skipCache")]
    pub skip_cache: bool,
    #[serde(default)]
    pub update: bool,
    #[serde(default)]
    pub registry_credentials: Option<RegistryCredentials>,
    /// Warren extension: the tier this template's sandboxes run on.
    #[serde(default)]
    pub isolation: Option<String>,
    /// Warren extension: the egress policy this template's sandboxes get when their create
    /// names none (a create's `network` replaces it whole).
    #[serde(default)]
    pub network: Option<warren_wire::control::EgressPolicy>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RegistryCredentials {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: warren_core::Secret,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_dialects_parse_to_the_same_steps() {
        let py = [
            json!({"type": "ENV", "args": ["A", "1"]}),
            json!({"type": "WORKDIR", "args": ["/app"]}),
        ];
        let js = [
            json!({"type": "env", "key": "A", "value": "1"}),
            json!({"type": "workdir", "path": "/app"}),
        ];
        for (a, b) in py.iter().zip(js.iter()) {
            assert_eq!(Step::parse(a).expect("py").0, Step::parse(b).expect("js").0);
        }
        let (copy, skip) = Step::parse(&json!({"type": "COPY", "args": ["app/,x.txt", "/srv"], "filesHash": "ab", "skipCache": true})).expect("copy");
        assert!(skip);
        assert_eq!(
            copy,
            Step::Copy {
                sources: vec!["app/".into(), "x.txt".into()],
                dest: "/srv".into(),
                files_hash: "ab".into(),
                owner: None,
                permissions: None
            }
        );
        let ready: ReadyCheck =
            serde_json::from_value(json!({"type": "process", "name": "nginx"})).expect("js ready");
        assert!(ready.probe().expect("probe").contains("nginx"));
    }
}
