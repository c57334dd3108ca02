//! Trees over engine ids: the seed workflow's binary tree, and the wider
//! tree `setup_communicator` connects engines along.
//!
//! A tree is a `{child: parent}` map; the root's parent is `None`. The root
//! is the first id; the rest is cut into consecutive runs, one subtree each
//! (two halves for [`bintree`], up to `fanout` for [`fanout_tree`]),
//! recursively — so a pre-order walk visits the ids in their original
//! order, and a communicator's fold along the tree is the sequential fold.

use std::collections::BTreeMap;

/// The `{child: parent}` tree over `ids`.
///
/// ```
/// let t = zpar_client::bintree(&[0, 1, 2, 3, 4, 5, 6]);
/// let expect = [(0, None), (1, Some(0)), (2, Some(1)), (3, Some(1)),
///               (4, Some(0)), (5, Some(4)), (6, Some(4))];
/// assert_eq!(t, expect.into_iter().collect());
/// ```
pub fn bintree(ids: &[u32]) -> BTreeMap<u32, Option<u32>> {
    let mut out = BTreeMap::new();
    build(ids, None, &mut out);
    out
}

fn build(ids: &[u32], parent: Option<u32>, out: &mut BTreeMap<u32, Option<u32>>) {
    let Some((&root, rest)) = ids.split_first() else {
        return;
    };
    out.insert(root, parent);
    let half = rest.len() / 2;
    build(&rest[..half], Some(root), out);
    build(&rest[half..], Some(root), out);
}

/// The `{child: parent}` tree over `ids` where each node has up to
/// `fanout` children (at least 2): the rest of the ids after the root is
/// cut into `fanout` runs as equal as they can be. `fanout_tree(ids, 2)`
/// is [`bintree`] but for which half gets the odd id.
///
/// A wide tree has fewer levels: `setup_communicator` uses
/// [`COMMUNICATOR_FANOUT`], so up to that many engines reduce in one hop
/// up and one down, and a thousand in four levels instead of nine.
///
/// ```
/// let t = zpar_client::bintree::fanout_tree(&[0, 1, 2, 3], 8);
/// assert_eq!(t, [(0, None), (1, Some(0)), (2, Some(0)), (3, Some(0))].into_iter().collect());
/// let t = zpar_client::bintree::fanout_tree(&[0, 1, 2, 3, 4, 5, 6], 3);
/// assert_eq!(t[&2], Some(1));
/// assert_eq!(t[&5], Some(0));
/// ```
pub fn fanout_tree(ids: &[u32], fanout: usize) -> BTreeMap<u32, Option<u32>> {
    let mut out = BTreeMap::new();
    build_wide(ids, None, fanout.max(2), &mut out);
    out
}

/// The tree `setup_communicator` connects `ids` along: [`fanout_tree`] of
/// fan-out [`COMMUNICATOR_FANOUT`] over the ids sorted (a parent folds its
/// children in ascending id, so only then is the fold one order from top to
/// bottom); the lowest id is the root.
///
/// ```
/// let t = zpar_client::bintree::communicator_tree(&[3, 1, 2, 0]);
/// assert_eq!(t, [(0, None), (1, Some(0)), (2, Some(0)), (3, Some(0))].into_iter().collect());
/// ```
pub fn communicator_tree(ids: &[u32]) -> BTreeMap<u32, Option<u32>> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    fanout_tree(&ids, COMMUNICATOR_FANOUT)
}

/// How many children a node of `setup_communicator`'s tree has at most.
/// Chosen with `zpar bench allreduce` and `zpar bench scale` (ARCHITECTURE.md,
/// "Collectives by size").
pub const COMMUNICATOR_FANOUT: usize = 8;

fn build_wide(
    ids: &[u32],
    parent: Option<u32>,
    fanout: usize,
    out: &mut BTreeMap<u32, Option<u32>>,
) {
    let Some((&root, rest)) = ids.split_first() else {
        return;
    };
    out.insert(root, parent);
    let runs = fanout.min(rest.len());
    let mut start = 0;
    for r in 0..runs {
        let len = rest.len() / runs + usize::from(r < rest.len() % runs);
        build_wide(&rest[start..start + len], Some(root), fanout, out);
        start += len;
    }
}

/// `{parent: [children]}`; the entry under `None` holds the root.
///
/// ```
/// let r = zpar_client::reverse_bintree(&zpar_client::bintree(&[0, 1, 2, 3, 4, 5, 6]));
/// assert_eq!(r[&None], vec![0]);
/// assert_eq!(r[&Some(0)], vec![1, 4]);
/// ```
pub fn reverse_bintree(tree: &BTreeMap<u32, Option<u32>>) -> BTreeMap<Option<u32>, Vec<u32>> {
    let mut out: BTreeMap<Option<u32>, Vec<u32>> = BTreeMap::new();
    for (child, parent) in tree {
        out.entry(*parent).or_default().push(*child);
    }
    out
}

/// One engine's place in a tree: what `setup_communicator` gives each
/// engine instead of the whole tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// Its parent (None at the root).
    pub parent: Option<u32>,
    /// Its children, ascending.
    pub children: Vec<u32>,
    /// The longest path from it down to a leaf.
    pub height: u32,
}

/// Every node's [`Place`] in `tree` (`{child: parent}`), in O(N); also the
/// root, which is the one node without a parent (None if there is not
/// exactly one), and the tree's height.
///
/// ```
/// let t = zpar_client::bintree(&[0, 1, 2, 3]);
/// let (places, root, height) = zpar_client::bintree::places(&t).unwrap();
/// assert_eq!((root, height), (0, 2));
/// assert_eq!(places[&0].children, vec![1, 2]);
/// assert_eq!(places[&2].children, vec![3]);
/// assert_eq!(places[&3].parent, Some(2));
/// assert_eq!(places[&2].height, 1);
/// ```
pub fn places(tree: &BTreeMap<u32, Option<u32>>) -> Option<(BTreeMap<u32, Place>, u32, u32)> {
    let mut out: BTreeMap<u32, Place> = tree
        .iter()
        .map(|(c, p)| {
            let place = Place {
                parent: *p,
                children: Vec::new(),
                height: 0,
            };
            (*c, place)
        })
        .collect();
    let mut roots = Vec::new();
    for (c, p) in tree {
        match p {
            Some(p) => out.get_mut(p)?.children.push(*c),
            None => roots.push(*c),
        }
    }
    let [root] = roots[..] else { return None };
    // Heights bottom-up: a node comes after all its ancestors in this
    // breadth-first order, so walking it backwards sees children first.
    let mut order = vec![root];
    let mut i = 0;
    while i < order.len() {
        order.extend(out[&order[i]].children.iter().copied());
        i += 1;
        if order.len() > tree.len() {
            return None; // a cycle
        }
    }
    if order.len() != tree.len() {
        return None; // a cycle away from the root
    }
    for node in order.iter().rev() {
        let height = out[node]
            .children
            .iter()
            .map(|c| out[c].height + 1)
            .max()
            .unwrap_or(0);
        out.get_mut(node)?.height = height;
    }
    let height = out[&root].height;
    Some((out, root, height))
}

/// How many steps `n` is below the root (0 for the root; 0 for ids not in
/// the tree).
pub fn depth(n: u32, tree: &BTreeMap<u32, Option<u32>>) -> usize {
    let mut d = 0;
    let mut at = tree.get(&n).copied().flatten();
    while let Some(p) = at {
        d += 1;
        if d > tree.len() {
            break; // a cycle; not a tree
        }
        at = tree.get(&p).copied().flatten();
    }
    d
}

/// The tree as text, one id a line, indented by depth (as the seed prints
/// it).
///
/// ```
/// let s = zpar_client::format_bintree(&zpar_client::bintree(&[0, 1, 2]), "  ");
/// assert_eq!(s, "0\n  1\n  2\n");
/// ```
pub fn format_bintree(tree: &BTreeMap<u32, Option<u32>>, indent: &str) -> String {
    let mut s = String::new();
    for n in tree.keys() {
        s.push_str(&indent.repeat(depth(*n, tree)));
        s.push_str(&n.to_string());
        s.push('\n');
    }
    s
}

/// Prints [`format_bintree`] with a two-space indent.
pub fn print_bintree(tree: &BTreeMap<u32, Option<u32>>) {
    print!("{}", format_bintree(tree, "  "));
}

/// The ids in `tree` below and including `n`.
pub fn subtree(n: u32, tree: &BTreeMap<u32, Option<u32>>) -> Vec<u32> {
    let mut out = vec![n];
    let mut i = 0;
    while i < out.len() {
        let at = out[i];
        out.extend(
            tree.iter()
                .filter(|(_, p)| **p == Some(at))
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_trees() {
        assert!(bintree(&[]).is_empty());
        assert_eq!(bintree(&[7]), [(7, None)].into_iter().collect());
        // The seed's split for 4: left [1], right [2, 3].
        let t = bintree(&[0, 1, 2, 3]);
        assert_eq!(
            t,
            [(0, None), (1, Some(0)), (2, Some(0)), (3, Some(2))]
                .into_iter()
                .collect()
        );
        assert_eq!(depth(3, &t), 2);
        assert_eq!(subtree(2, &t), vec![2, 3]);
    }

    /// The ids of `tree` in pre-order (children in ascending id), and the
    /// most children any node has.
    fn preorder(tree: &BTreeMap<u32, Option<u32>>) -> (Vec<u32>, usize) {
        let rev = reverse_bintree(tree);
        let (mut order, mut widest) = (Vec::new(), 0);
        let mut stack = rev[&None].clone();
        while let Some(x) = stack.pop() {
            order.push(x);
            if let Some(ch) = rev.get(&Some(x)) {
                widest = widest.max(ch.len());
                stack.extend(ch.iter().rev());
            }
        }
        (order, widest)
    }

    #[test]
    fn preorder_is_id_order() {
        for n in 1..20u32 {
            let ids: Vec<u32> = (0..n).collect();
            let t = bintree(&ids);
            assert_eq!(preorder(&t).0, ids, "n = {n}");
            assert!(t.values().filter(|p| p.is_none()).count() == 1);
        }
    }

    #[test]
    fn fanout_trees_are_preorder_and_wide() {
        for fanout in [2, 3, 8, 16] {
            for n in 1..70u32 {
                let ids: Vec<u32> = (0..n).collect();
                let (order, widest) = preorder(&fanout_tree(&ids, fanout));
                assert_eq!(order, ids, "n {n}, fanout {fanout}");
                assert!(widest <= fanout, "n {n}, fanout {fanout}");
            }
        }
        let t = fanout_tree(&(0..1000).collect::<Vec<_>>(), COMMUNICATOR_FANOUT);
        assert_eq!(t.keys().map(|n| depth(*n, &t)).max(), Some(4));
    }

    #[test]
    fn places_agree_with_the_tree() {
        for n in [1u32, 2, 9, 70, 1000] {
            let t = communicator_tree(&(0..n).collect::<Vec<_>>());
            let (places, root, height) = places(&t).unwrap();
            assert_eq!(root, 0);
            let deepest = t.keys().map(|k| depth(*k, &t)).max().unwrap();
            assert_eq!(height as usize, deepest, "n {n}");
            for (node, place) in &places {
                assert_eq!(place.parent, t[node]);
                let below = subtree(*node, &t);
                assert_eq!(
                    place.children.len(),
                    t.values().filter(|p| **p == Some(*node)).count()
                );
                let h = below
                    .iter()
                    .map(|b| depth(*b, &t) - depth(*node, &t))
                    .max()
                    .unwrap();
                assert_eq!(place.height as usize, h, "n {n}, node {node}");
            }
        }
        // No root, two roots, a cycle: no places.
        assert!(places(&[(0, Some(1)), (1, Some(0))].into_iter().collect()).is_none());
        assert!(places(&[(0, None), (1, None)].into_iter().collect()).is_none());
        assert!(places(
            &[(0, None), (1, Some(2)), (2, Some(1))]
                .into_iter()
                .collect()
        )
        .is_none());
        assert!(places(&BTreeMap::new()).is_none());
    }

    #[test]
    fn prints_indented() {
        let t = bintree(&[0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(
            format_bintree(&t, "  "),
            "0\n  1\n    2\n    3\n  4\n    5\n    6\n"
        );
    }
}
