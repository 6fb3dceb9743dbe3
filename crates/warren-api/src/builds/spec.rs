//! The build request in both SDK dialects (spec §3.9) and its steps. What a build produces is a
//! `TemplateSpec` (`crate::template_spec`).

use serde::Deserialize;
use serde_json::Value;

pub use crate::template_spec::{ReadyCheck, TemplateSpec};

/// One build step, normalised from either dialect.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A shell command; `user` only from E2B's dialect (`run_cmd(..., user=)`).
    Run {
        command: String,
        user: Option<String>,
    },
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

/// A step's `type` (upper-cased) and `args` (as strings), as both dialects send them.
struct RawStep {
    kind: String,
    args: Vec<String>,
}

impl RawStep {
    fn of(v: &Value) -> Self {
        let kind = v["type"].as_str().unwrap_or("").to_ascii_uppercase();
        let args = v["args"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Self { kind, args }
    }
}

impl Step {
    pub fn parse(v: &Value) -> Result<(Step, bool), StepError> {
        let RawStep { kind, args } = RawStep::of(v);
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
            "RUN" => Step::Run {
                command: args.join(" "),
                user: None,
            },
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

    /// One step of E2B's v2 template builder (`TemplateStep`): RUN `[command, user?]`, COPY
    /// `[src, dest, user, mode]`, ENV `[k1, v1, k2, v2, …]`, WORKDIR `[path]`, USER `[name]`;
    /// `force` skips the cache from this step on. ENV gives one step per pair.
    pub fn parse_e2b(v: &Value) -> Result<Vec<(Step, bool)>, StepError> {
        let RawStep { kind, args } = RawStep::of(v);
        let arg = |i: usize| {
            args.get(i)
                .cloned()
                .ok_or_else(|| StepError::MissingArgument {
                    kind: kind.clone(),
                    n: i + 1,
                })
        };
        let given = |i: usize| args.get(i).filter(|a| !a.is_empty()).cloned();
        let force = v["force"].as_bool().unwrap_or(false);
        let steps = match kind.as_str() {
            "RUN" => vec![Step::Run {
                command: arg(0)?,
                user: given(1),
            }],
            "COPY" => vec![Step::Copy {
                sources: vec![arg(0)?],
                dest: arg(1)?,
                files_hash: v["filesHash"].as_str().unwrap_or("").to_owned(),
                owner: given(2),
                permissions: given(3),
            }],
            "ENV" => {
                if args.is_empty() || !args.len().is_multiple_of(2) {
                    return Err(StepError::MissingArgument {
                        kind,
                        n: args.len() + 1,
                    });
                }
                args.chunks(2)
                    .map(|kv| Step::Env(kv[0].clone(), kv[1].clone()))
                    .collect()
            }
            "WORKDIR" => vec![Step::Workdir(arg(0)?)],
            "USER" => vec![Step::User(arg(0)?)],
            other => return Err(StepError::Unknown(other.to_owned())),
        };
        Ok(steps.into_iter().map(|s| (s, force)).collect())
    }

    pub fn describe(&self) -> String {
        match self {
            Step::Run {
                command,
                user: None,
            } => format!("RUN {command}"),
            Step::Run {
                command,
                user: Some(u),
            } => format!("RUN (as {u}) {command}"),
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
    /// Steps in E2B's dialect (`e2b::templates`): RUN and COPY act as the current user, who is
    /// `user` in `/home/user` until a USER or WORKDIR step says otherwise, as on E2B.
    #[serde(skip)]
    pub e2b: bool,
}

impl BuildRequest {
    /// The steps, normalised, each with whether it skips the cache.
    pub fn parsed_steps(&self) -> Result<Vec<(Step, bool)>, StepError> {
        if self.e2b {
            let mut all = Vec::new();
            for s in &self.steps {
                all.extend(Step::parse_e2b(s)?);
            }
            Ok(all)
        } else {
            self.steps.iter().map(Step::parse).collect()
        }
    }
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
        let e2b = [
            json!({"type": "ENV", "args": ["A", "1", "B", "2"], "force": false}),
            json!({"type": "RUN", "args": ["pip install x", "root"], "force": true}),
            json!({"type": "COPY", "args": ["app.py", "/app/", "user", "0755"], "filesHash": "ab"}),
        ];
        let steps: Vec<(Step, bool)> = e2b
            .iter()
            .flat_map(|s| Step::parse_e2b(s).expect("e2b step"))
            .collect();
        assert_eq!(steps[0].0, Step::Env("A".into(), "1".into()));
        assert_eq!(steps[1].0, Step::Env("B".into(), "2".into()));
        assert_eq!(
            steps[2],
            (
                Step::Run {
                    command: "pip install x".into(),
                    user: Some("root".into())
                },
                true
            )
        );
        assert!(
            matches!(&steps[3].0, Step::Copy { owner: Some(o), permissions: Some(m), .. } if o == "user" && m == "0755")
        );
        assert!(Step::parse_e2b(&json!({"type": "ENV", "args": ["A"]})).is_err());
        assert!(Step::parse_e2b(&json!({"type": "HEALTHCHECK", "args": []})).is_err());
        let ready: ReadyCheck =
            serde_json::from_value(json!({"type": "process", "name": "nginx"})).expect("js ready");
        assert!(ready.probe().expect("probe").contains("nginx"));
    }
}
