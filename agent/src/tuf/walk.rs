//! Delegated targets roles, loaded lazily: only the roles the preorder depth-first walk of TUF
//! §5.6.7 reaches for one target path, each through a delegation whose paths match it. A role
//! is never asked about a name outside what it was delegated, so what it lists there is
//! ignored, never installed and never a reason to refuse the whole repository.

use std::collections::HashSet;

use sha2::{Digest, Sha256};
use tough::TargetName;
use tough::schema::{DelegatedRole, Delegations, PathSet, Signed, Target, Targets};

use super::{TrustedRepo, Verifier};
use crate::error::AgentError;

/// At most this many roles are visited for one target (python-tuf's `max_delegations`): a
/// repository could delegate in cycles or fan out without end.
const MAX_DELEGATIONS: usize = 32;
/// Names a delegated role may not take: its file in the datastore would be a top-level role's or
/// one of the agent's own (such a delegation is skipped, as python-tuf skips the first four).
const RESERVED: [&str; 6] = ["root", "timestamp", "snapshot", "targets", "latest_known_time", "provisioned.root"];

/// A role name as a file name, as python-tuf writes it (`urllib.parse.quote(name, "")`):
/// everything but `A-Za-z0-9_.-~` becomes `%XX`, so a name cannot leave the metadata directory.
pub fn encode_role(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"_.-~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl TrustedRepo {
    /// The target `name` as the delegation graph assigns it (§5.6.7), loading the roles on the
    /// way; `None` when no role reached lists it.
    pub async fn find_target(&mut self, name: &TargetName) -> Result<Option<Target>, AgentError> {
        let mut stack: Vec<(String, String)> = vec![("targets".to_owned(), String::new())];
        let mut visited = HashSet::new();
        while visited.len() <= MAX_DELEGATIONS {
            let Some((role, parent)) = stack.pop() else { break };
            // A (role, delegator) pair is visited once: delegations may form cycles.
            let pair = (role.clone(), parent.clone());
            if visited.contains(&pair) {
                continue;
            }
            let targets = self.role(&role, &parent).await?;
            if let Some(target) = targets.signed.targets.get(name) {
                return Ok(Some(target.clone()));
            }
            let children = children_for(targets.signed.delegations.as_ref(), name, &role);
            visited.insert(pair);
            // A terminating delegation ends the search past it (children_for stops there too).
            if children.last().is_some_and(|(_, terminating)| *terminating) {
                stack.clear();
            }
            stack.extend(children.into_iter().rev().map(|(child, _)| child));
        }
        Ok(None)
    }

    /// Loads the role `name` the top-level targets delegates (a product's role in the image
    /// repository) and puts it in that delegation's `targets`, where [`crate::verify`] reads
    /// it. `false` when the top-level targets does not delegate `name`.
    pub async fn load_top_delegation(&mut self, name: &str) -> Result<bool, AgentError> {
        let delegated =
            |t: &Signed<Targets>| t.signed.delegations.iter().any(|d| d.roles.iter().any(|r| r.name == name));
        if RESERVED.contains(&name) || !delegated(&self.targets) {
            return Ok(false);
        }
        let loaded = self.role(name, "targets").await?.clone();
        for role in self.targets.signed.delegations.iter_mut().flat_map(|d| d.roles.iter_mut()) {
            if role.name == name {
                role.targets = Some(loaded.clone());
            }
        }
        Ok(true)
    }

    /// The role `role` as delegated by `parent` (loaded by now), loading it on first use. A role
    /// loaded before through another delegator must verify under this one's keys too.
    async fn role(&mut self, role: &str, parent: &str) -> Result<&Signed<Targets>, AgentError> {
        if role == "targets" {
            return Ok(&self.targets);
        }
        let delegations = self.delegations_of(role, parent)?;
        match self.delegated.get(role) {
            Some(cached) => self.source.verify_targets(role, cached, &Verifier::Delegations(delegations))?,
            None => {
                let loaded = self.load_delegated(role, delegations).await?;
                self.delegated.insert(role.to_owned(), loaded);
            }
        }
        self.delegated.get(role).ok_or_else(|| AgentError::Local(format!("role {role} was just loaded")))
    }

    /// The delegations of `parent`, a role loaded by now, which delegates to `role`.
    fn delegations_of(&self, role: &str, parent: &str) -> Result<&Delegations, AgentError> {
        let delegator = if parent == "targets" { Some(&self.targets) } else { self.delegated.get(parent) };
        delegator
            .and_then(|t| t.signed.delegations.as_ref())
            .ok_or_else(|| self.source.refused("invalid_metadata", role, format!("{parent} does not delegate to it")))
    }

    async fn load_delegated(&self, role: &str, delegations: &Delegations) -> Result<Signed<Targets>, AgentError> {
        let meta = self
            .snapshot
            .signed
            .meta
            .get(&format!("{role}.json"))
            .ok_or_else(|| self.source.mismatch(role, "the snapshot does not list it"))?;
        let verifier = Verifier::Delegations(delegations);
        self.source.load_targets(role, meta, &verifier, self.root.signed.consistent_snapshot).await
    }
}

/// The roles `delegations` (of role `parent`) passes `name` to, in order, each with whether it
/// is terminating; the list stops at the first terminating one.
fn children_for(delegations: Option<&Delegations>, name: &TargetName, parent: &str) -> Vec<((String, String), bool)> {
    let mut children = Vec::new();
    for role in delegations.iter().flat_map(|d| d.roles.iter()) {
        if RESERVED.contains(&role.name.as_str()) || !delegates(role, name) {
            continue;
        }
        children.push(((role.name.clone(), parent.to_owned()), role.terminating));
        if role.terminating {
            break;
        }
    }
    children
}

/// Whether `role`'s delegation covers target `name`, as python-tuf decides (the reference the
/// conformance suite checks): a `paths` pattern matches segment by segment, with shell-style
/// `*`, `?` and `[...]` that never cross a `/`; a `path_hash_prefixes` entry matches when the
/// sha256 of the name, in hex, starts with it. (tough's glob lets `*` cross `/`.)
pub fn delegates(role: &DelegatedRole, name: &TargetName) -> bool {
    match &role.paths {
        PathSet::Paths(patterns) => patterns.iter().any(|p| path_matches(p.value(), name.raw())),
        PathSet::PathHashPrefixes(prefixes) => {
            let digest = hex::encode(Sha256::digest(name.raw().as_bytes()));
            prefixes.iter().any(|p| digest.starts_with(p.value()))
        }
    }
}

fn path_matches(pattern: &str, name: &str) -> bool {
    let (pattern, name): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), name.split('/').collect());
    pattern.len() == name.len() && pattern.iter().zip(&name).all(|(p, n)| fnmatch(p.as_bytes(), n.as_bytes()))
}

/// Shell-style matching of one path segment (Python's `fnmatch.fnmatchcase`).
fn fnmatch(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|skip| fnmatch(rest, &name[skip..])),
        Some((b'?', rest)) => name.split_first().is_some_and(|(_, tail)| fnmatch(rest, tail)),
        Some((b'[', rest)) => match class(rest) {
            Some((matches, after)) => name.split_first().is_some_and(|(c, tail)| matches(*c) && fnmatch(after, tail)),
            // An unclosed `[` is a literal, as in Python.
            None => name.split_first().is_some_and(|(c, tail)| *c == b'[' && fnmatch(rest, tail)),
        },
        Some((literal, rest)) => name.split_first().is_some_and(|(c, tail)| c == literal && fnmatch(rest, tail)),
    }
}

/// A `[...]` class (after its `[`): a matcher and the pattern after its `]`, or `None` when it
/// is not closed.
fn class(pattern: &[u8]) -> Option<(impl Fn(u8) -> bool + '_, &[u8])> {
    let (negated, body) = match pattern.first() {
        Some(b'!') => (true, &pattern[1..]),
        _ => (false, pattern),
    };
    // A `]` right after `[` or `[!` is a member, not the end.
    let end = body.iter().skip(1).position(|c| *c == b']')? + 1;
    let members = &body[..end];
    let matches = move |c: u8| {
        let mut i = 0;
        let mut found = false;
        while i < members.len() {
            if i + 2 < members.len() && members[i + 1] == b'-' {
                found |= (members[i]..=members[i + 2]).contains(&c);
                i += 3;
            } else {
                found |= members[i] == c;
                i += 1;
            }
        }
        found != negated
    };
    Some((matches, &body[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_encoded_like_python_tufs_quote() {
        assert_eq!(encode_role("pump-x1"), "pump-x1");
        assert_eq!(encode_role("a/b c"), "a%2Fb%20c");
        assert_eq!(encode_role("../root"), "..%2Froot");
        assert_eq!(encode_role("é~_."), "%C3%A9~_.");
    }

    #[test]
    fn patterns_match_segment_by_segment_like_python_tuf() {
        let cases = [
            ("pump-x1/*/*", "pump-x1/1.0.0/fw.bin", true),
            ("pump-x1/*/*", "pump-x1/fw.bin", false),
            ("pump-x1/*/*", "pump-x1/1.0.0/a/fw.bin", false),
            ("pump-x1/*", "pump-x1/1.0.0/fw.bin", false),
            ("*.tgz", "a/b.tgz", false),
            ("foo-version-?.tgz", "foo-version-2.tgz", true),
            ("foo-version-?.tgz", "foo-version-alpha.tgz", false),
            ("file[0-9].txt", "file7.txt", true),
            ("file[!0-9].txt", "file7.txt", false),
            ("File.txt", "file.txt", false),
            ("a[", "a[", true),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(path_matches(pattern, name), expected, "{pattern} vs {name}");
        }
    }
}
