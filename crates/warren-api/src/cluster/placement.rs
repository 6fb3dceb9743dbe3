//! Where a new sandbox goes: a healthy, non-draining node that runs the tier and is in the
//! region asked for, with room for it. Of up to three such nodes picked at random, the one with
//! the most free memory wins, a node that already holds the template counting as much freer
//! (no template to prepare or layers to fetch). Random sampling keeps concurrent control planes
//! from all choosing the same node between two reports.

use rand::seq::SliceRandom;

use warren_core::Tier;

use super::{Cluster, NodeView};

/// Memory may be promised beyond a node's RAM by this factor (sandboxes rarely touch their
/// limit); the machine's own check refuses starts when it is really short.
const MEMORY_OVERCOMMIT: u64 = 64;
/// How many random candidates are compared.
const CHOICES: usize = 3;

/// What a template needs on a node.
pub enum TemplateNeed<'a> {
    Builtin(&'a str),
    Layers(&'a [String]),
}

pub enum Placement {
    /// This control plane's own node.
    Local,
    Remote(Box<NodeView>),
}

/// No node can take the sandbox now; says what was asked and what the cluster has.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no node can take this sandbox{asked}: {joined} node(s) joined, {healthy} healthy and not draining{regions}; retry later or add nodes")]
pub struct NoNodeFits {
    /// ` in region "eu" with isolation "gvisor"`, or nothing.
    asked: String,
    joined: usize,
    healthy: usize,
    /// `, regions: eu, us`, or nothing.
    regions: String,
}

/// What the sandbox asks for.
pub struct Wanted<'a> {
    pub tier: Option<Tier>,
    pub region: Option<&'a str>,
    pub memory_mb: u32,
    pub template: TemplateNeed<'a>,
}

impl Cluster {
    /// Chooses a node, or says why none can take the sandbox.
    pub fn place(&self, wanted: &Wanted<'_>) -> Result<Placement, NoNodeFits> {
        let nodes = self.nodes();
        let local_fits = self.local.as_ref().is_some_and(|n| {
            wanted.region.is_none_or(|r| r == self.local_region)
                && wanted.tier.is_none_or(|t| n.tiers().contains(&t))
        });
        let remote: Vec<&NodeView> = nodes
            .iter()
            .filter(|n| n.state() == "healthy")
            .filter(|n| wanted.region.is_none_or(|r| n.region() == Some(r)))
            .filter(|n| wanted.tier.is_none_or(|t| n.tiers().contains(&t)))
            .filter(|n| self.has_room(n, wanted.memory_mb))
            .collect();
        if remote.is_empty() {
            if local_fits {
                return Ok(Placement::Local);
            }
            return Err(self.why_none(&nodes, wanted));
        }
        if local_fits {
            // A control plane with a node of its own and joined nodes: its own node is one more
            // candidate, by sandbox count (it does not report like the others).
            let local_count = self.local.as_ref().map_or(0, |n| n.sandboxes().len());
            let fewest_remote = remote
                .iter()
                .map(|n| n.report.used.sandboxes + self.placed_since(n))
                .min()
                .unwrap_or(0);
            if local_count as u32 <= fewest_remote {
                return Ok(Placement::Local);
            }
        }
        let mut rng = rand::thread_rng();
        let picked: Vec<&&NodeView> = remote.choose_multiple(&mut rng, CHOICES).collect();
        let best = picked
            .into_iter()
            .max_by(|a, b| self.score(a, wanted).total_cmp(&self.score(b, wanted)))
            .map(|n| (*n).clone());
        match best {
            Some(n) => {
                self.count_placement(&n);
                Ok(Placement::Remote(Box::new(n)))
            }
            None => Err(self.why_none(&nodes, wanted)),
        }
    }

    fn has_room(&self, n: &NodeView, memory_mb: u32) -> bool {
        let placed = self.placed_since(n);
        let c = &n.report.capacity;
        let u = &n.report.used;
        u.sandboxes + placed < c.sandboxes
            && (c.memory_mb == 0
                || u.memory_mb + u64::from(memory_mb) * (u64::from(placed) + 1)
                    <= c.memory_mb * MEMORY_OVERCOMMIT)
    }

    /// Free share of the node's sandboxes, plus one when it holds the template.
    fn score(&self, n: &NodeView, wanted: &Wanted<'_>) -> f64 {
        let c = &n.report.capacity;
        let used = n.report.used.sandboxes + self.placed_since(n);
        let free = 1.0 - f64::from(used) / f64::from(c.sandboxes.max(1));
        let cached = match wanted.template {
            TemplateNeed::Builtin(name) => n.report.templates.iter().any(|t| t == name),
            TemplateNeed::Layers(keys) => keys.iter().all(|k| match k.strip_prefix("builtin:") {
                Some(t) => n.report.templates.iter().any(|x| x == t),
                None => n.report.layers.contains(k),
            }),
        };
        free + if cached { 1.0 } else { 0.0 }
    }

    fn why_none(&self, nodes: &[NodeView], wanted: &Wanted<'_>) -> NoNodeFits {
        let mut asked = String::new();
        if let Some(r) = wanted.region {
            asked.push_str(&format!(" in region {r:?}"));
        }
        if let Some(t) = wanted.tier {
            asked.push_str(&format!(" with isolation \"{t}\""));
        }
        let regions: std::collections::BTreeSet<&str> =
            nodes.iter().filter_map(NodeView::region).collect();
        NoNodeFits {
            asked,
            joined: nodes.len(),
            healthy: nodes.iter().filter(|n| n.state() == "healthy").count(),
            regions: if regions.is_empty() {
                String::new()
            } else {
                format!(
                    ", regions: {}",
                    regions.into_iter().collect::<Vec<_>>().join(", ")
                )
            },
        }
    }
}
