//! This engine's place in the tree, from the `{child: parent}` map, and the
//! one deadline formula that grows with it.

use std::collections::BTreeMap;
use std::time::Duration;

/// The wait for a step `levels` below (or above) this engine: `base +
/// levels × base/4`. The one deadline formula of the communicator.
pub fn wait_for(base: Duration, levels: u32) -> Duration {
    base + base / 4 * levels
}

/// This engine's place in the tree, from the `{child: parent}` map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    /// This engine.
    pub me: u32,
    /// Its parent (None at the root).
    pub parent: Option<u32>,
    /// Its children, ascending.
    pub children: Vec<u32>,
    /// The root of the tree.
    pub root: u32,
    /// The longest path from this engine down to a leaf.
    pub height: u32,
    /// The height of the whole tree.
    pub tree_height: u32,
}

impl Tree {
    /// The place of `me` in `parents` (`{child: parent}`, one `None`).
    pub fn new(me: u32, parents: &BTreeMap<u32, Option<u32>>) -> Result<Tree, String> {
        let Some(parent) = parents.get(&me).copied() else {
            return Err(format!("tree: engine {me} is not in the tree"));
        };
        let roots: Vec<u32> = parents
            .iter()
            .filter(|(_, p)| p.is_none())
            .map(|(c, _)| *c)
            .collect();
        let [root] = roots[..] else {
            return Err(format!(
                "tree: the tree must have exactly one root, not {}",
                roots.len()
            ));
        };
        let children = parents
            .iter()
            .filter(|(_, p)| **p == Some(me))
            .map(|(c, _)| *c)
            .collect();
        Ok(Tree {
            me,
            parent,
            children,
            root,
            height: subtree_height(parents, me)?,
            tree_height: subtree_height(parents, root)?,
        })
    }

    /// Whether this engine is the root.
    pub fn is_root(&self) -> bool {
        self.parent.is_none()
    }
}

/// The longest path from `node` down to a leaf; an error on a cycle.
/// O(N): the children are indexed once (a thousand engines each compute
/// this at connect).
pub fn subtree_height(parents: &BTreeMap<u32, Option<u32>>, node: u32) -> Result<u32, String> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (c, p) in parents {
        if let Some(p) = p {
            children.entry(*p).or_default().push(*c);
        }
    }
    let mut best = 0;
    let mut stack = vec![(node, 0u32)];
    let mut visited = 0usize;
    while let Some((n, d)) = stack.pop() {
        visited += 1;
        if visited > parents.len() + 1 {
            return Err("tree: the parent map has a cycle".into());
        }
        best = best.max(d);
        for c in children.get(&n).into_iter().flatten() {
            stack.push((*c, d + 1));
        }
    }
    Ok(best)
}
