use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use warren_runtime::templates::{builtin_recipes, TemplateCache};

#[derive(Subcommand, Debug)]
pub enum TemplateCommand {
    /// Build the built-in templates into the cache now, showing progress (otherwise they build on
    /// first use). Does nothing for templates already cached.
    Prepare {
        #[arg(long, env = "WARREN_CACHE_DIR", default_value = super::DEFAULT_CACHE_DIR)]
        cache_dir: PathBuf,
        #[arg(long)]
        debian_mirror: Option<String>,
        /// Only these templates (default: all built-in ones).
        names: Vec<String>,
    },
    /// Build a template from a Dockerfile-like recipe on a running server, with live logs.
    Build(Box<super::build::BuildArgs>),
    /// Show the built-in templates and whether they are cached.
    List {
        #[arg(long, env = "WARREN_CACHE_DIR", default_value = super::DEFAULT_CACHE_DIR)]
        cache_dir: PathBuf,
    },
}

pub async fn run(cmd: TemplateCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TemplateCommand::Build(a) => return super::build::run(*a).await,
        TemplateCommand::Prepare {
            cache_dir,
            debian_mirror,
            names,
        } => {
            let cache = TemplateCache::new(&cache_dir, debian_mirror);
            for r in builtin_recipes()
                .into_iter()
                .filter(|r| names.is_empty() || names.iter().any(|n| n == r.name))
            {
                if cache.is_ready(&r) {
                    println!("[{}] cached at {}", r.name, cache.rootfs(r.name).display());
                    continue;
                }
                let started = std::time::Instant::now();
                cache.ensure(&r, &|line| println!("{line}")).await?;
                println!(
                    "[{}] built in {:.0} s",
                    r.name,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        TemplateCommand::List { cache_dir } => {
            let cache = TemplateCache::new(&cache_dir, None);
            println!(
                "{:<4} {:<18} {:<8} {:<6} {:<8} {:<8}",
                "ID", "NAME", "CACHED", "VCPU", "MEM MB", "DISK MB"
            );
            for r in builtin_recipes() {
                let cached = if cache.is_ready(&r) { "yes" } else { "no" };
                println!(
                    "{:<4} {:<18} {:<8} {:<6} {:<8} {:<8}",
                    r.id,
                    r.name,
                    cached,
                    r.resources.vcpu,
                    r.resources.memory_mb,
                    r.resources.disk_mb
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
