//! Candidate selection: policies bucketed by the operation and the tool their scope names.
//!
//! Cedar evaluates every policy of a set (about 1 µs each), so a request only meets the buckets
//! whose scope can match it. A policy outside those buckets has an `action` or `resource` scope
//! that the request cannot satisfy, so Cedar would find it neither satisfied nor erroring (scope
//! is checked before conditions): leaving it out changes no decision, reason or error.
//!
//! The buckets are disjoint for one request (a policy sits under its named operations or under
//! "any operation", never both), so one Cedar call per bucket and the union of their answers
//! equals one call over the union of the buckets; see `PolicyBundle::decide`.

use std::collections::HashMap;

use cedar_policy::{
    ActionConstraint, EntityUid, Policy, PolicySet, PolicySetError, ResourceConstraint,
};

/// The entity type of resources; a `resource == Tool::"x"` scope is indexed by `x`.
pub(crate) const TOOL_TYPE: &str = "Tool";

/// Policies by operation, then by tool.
#[derive(Debug, Default)]
pub(crate) struct Index {
    /// Policies whose scope names the operation (`action == …` or `action in [...]`).
    by_action: HashMap<String, ByTool>,
    /// Policies with no action constraint.
    any_action: ByTool,
}

#[derive(Debug, Default)]
struct ByTool {
    /// Policies whose scope is `resource == Tool::"…"`.
    by_tool: HashMap<String, PolicySet>,
    /// Every other resource scope (`any`, `is Tool`, `in …`): they may match any tool.
    any_tool: Option<PolicySet>,
}

// === impl Index ===

impl Index {
    pub(crate) fn insert(&mut self, policy: &Policy) -> Result<(), Box<PolicySetError>> {
        let tool = match policy.resource_constraint() {
            ResourceConstraint::Eq(uid) if is_tool(&uid) => Some(uid.id().unescaped().to_owned()),
            _ => None,
        };
        match policy.action_constraint() {
            ActionConstraint::Any => self.any_action.insert(tool, policy),
            ActionConstraint::Eq(uid) => self.bucket(&uid).insert(tool, policy),
            // The schema declares no action groups, so `in` is plain membership in the list
            // (`action in []` is refused by the validator; it would land in no bucket).
            ActionConstraint::In(mut uids) => {
                uids.sort();
                uids.dedup();
                for uid in uids {
                    self.bucket(&uid).insert(tool.clone(), policy)?;
                }
                Ok(())
            }
        }
    }

    fn bucket(&mut self, action: &EntityUid) -> &mut ByTool {
        self.by_action
            .entry(action.id().unescaped().to_owned())
            .or_default()
    }

    /// The buckets that may hold a policy matching `operation` on `tool`: at most four, disjoint.
    pub(crate) fn candidates(&self, operation: &str, tool: &str) -> Vec<&PolicySet> {
        let mut sets = Vec::with_capacity(4);
        if let Some(named) = self.by_action.get(operation) {
            named.push_sets(tool, &mut sets);
        }
        self.any_action.push_sets(tool, &mut sets);
        sets
    }
}

// === impl ByTool ===

impl ByTool {
    fn insert(&mut self, tool: Option<String>, policy: &Policy) -> Result<(), Box<PolicySetError>> {
        let set = match tool {
            Some(tool) => self.by_tool.entry(tool).or_default(),
            None => self.any_tool.get_or_insert_with(PolicySet::new),
        };
        set.add(policy.clone()).map_err(Box::new)
    }

    fn push_sets<'a>(&'a self, tool: &str, sets: &mut Vec<&'a PolicySet>) {
        sets.extend(self.by_tool.get(tool));
        sets.extend(self.any_tool.as_ref());
    }
}

fn is_tool(uid: &EntityUid) -> bool {
    uid.type_name().basename() == TOOL_TYPE && uid.type_name().namespace().is_empty()
}
