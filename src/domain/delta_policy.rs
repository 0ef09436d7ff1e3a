//! Which deltas to make (docs/design.md §1, "Delta targets"): to each release a product's devices
//! are headed for, from the releases most of them run, capped per release. The delta job
//! (`jobs::deltas`) reads the facts from the database and computes what this returns.

use std::collections::HashSet;

/// A listed release of a product, as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    /// Release row.
    pub id: i64,
    /// Whether its image is small enough to compute a delta for (`delta_max_image_bytes`).
    pub fits: bool,
}

/// The facts about one product the policy decides from.
#[derive(Debug, Clone, Default)]
pub struct ProductFacts {
    /// Its listed releases, least recently listed first (the newest is last).
    pub listed: Vec<Listed>,
    /// Releases its running, paused or halted rollouts install.
    pub underway: Vec<i64>,
    /// Releases its active devices run, with how many devices run each, most devices first.
    pub running: Vec<(i64, i64)>,
    /// (from, to) pairs that have a delta or a remembered refusal.
    pub settled: HashSet<(i64, i64)>,
}

/// The (from, to) pairs to compute, in order: to the newest listed release, then to each release
/// of a rollout underway; from the `cap` listed releases most devices run (not the target
/// itself). A pair already settled is skipped but still takes its place under the cap, so a
/// refused delta never lets a less-run release in. Images that do not fit are left out on
/// either side; the newest release is the newest listed one whether it fits or not.
pub fn wanted_pairs(facts: &ProductFacts, cap: usize) -> Vec<(i64, i64)> {
    let fits = |id: i64| facts.listed.iter().any(|r| r.id == id && r.fits);
    let newest = facts.listed.last().map(|r| r.id);
    let mut targets: Vec<i64> = newest.into_iter().collect();
    targets.extend(facts.listed.iter().map(|r| r.id).filter(|id| facts.underway.contains(id)));
    let mut seen = HashSet::new();
    targets.retain(|id| fits(*id) && seen.insert(*id));
    let mut pairs = Vec::new();
    for to in targets {
        let sources = facts.running.iter().map(|(id, _)| *id).filter(|id| *id != to && fits(*id)).take(cap);
        pairs.extend(sources.filter(|from| !facts.settled.contains(&(*from, to))).map(|from| (from, to)));
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(ids: &[i64]) -> Vec<Listed> {
        ids.iter().map(|&id| Listed { id, fits: true }).collect()
    }

    #[test]
    fn deltas_go_to_the_newest_release_from_what_devices_run() {
        let facts = ProductFacts { listed: listed(&[1, 2, 3]), running: vec![(1, 50), (2, 10)], ..Default::default() };
        assert_eq!(wanted_pairs(&facts, 3), [(1, 3), (2, 3)]);
    }

    #[test]
    fn releases_of_rollouts_underway_are_targets_too_each_once() {
        let facts = ProductFacts {
            listed: listed(&[1, 2, 3, 4]),
            underway: vec![2, 4],
            running: vec![(1, 7)],
            ..Default::default()
        };
        assert_eq!(wanted_pairs(&facts, 3), [(1, 4), (1, 2)]);
    }

    #[test]
    fn the_cap_keeps_the_most_run_sources_and_a_settled_pair_keeps_its_place() {
        let facts = ProductFacts {
            listed: listed(&[1, 2, 3, 4, 5]),
            running: vec![(2, 900), (1, 40), (3, 2), (4, 1)],
            settled: HashSet::from([(1, 5)]),
            ..Default::default()
        };
        assert_eq!(wanted_pairs(&facts, 2), [(2, 5)], "1 is settled; 3 and 4 are below the cap");
        assert_eq!(wanted_pairs(&facts, 0), []);
    }

    #[test]
    fn unlisted_too_large_and_same_releases_are_never_paired() {
        let mut facts = ProductFacts {
            listed: vec![Listed { id: 1, fits: false }, Listed { id: 2, fits: true }, Listed { id: 3, fits: true }],
            // 9 is not listed (yanked or delisted); 3 runs the newest release already.
            running: vec![(9, 100), (1, 50), (3, 20), (2, 10)],
            ..Default::default()
        };
        assert_eq!(wanted_pairs(&facts, 1), [(2, 3)], "the cap counts only sources that could be used");
        // A newest release too large for a delta is no target, and no older release stands in.
        facts.listed.push(Listed { id: 4, fits: false });
        assert_eq!(wanted_pairs(&facts, 3), []);
    }
}
