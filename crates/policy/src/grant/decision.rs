//! What a decision says: per operation, the outcome and the policies that made it.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use cedar_policy::{AuthorizationError, Decision as CedarDecision, PolicyId, Response};

/// The answer to a [`GrantRequest`](super::GrantRequest): one verdict per operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub operations: Vec<OperationDecision>,
}

/// The verdict on one operation and the policies that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OperationDecision {
    pub operation: String,
    pub outcome: Outcome,
    /// Sorted. `Allowed`: the permits that matched. `Forbidden`: the forbids that matched.
    /// `EvaluationFailed`: the policies that erred. Otherwise empty.
    pub determining: Vec<String>,
    /// What Cedar reported, sorted by policy id.
    pub errors: Vec<EvaluationError>,
    /// Sorted: the determining permits annotated `@approval("required")` (only when `Allowed`).
    pub approval: Vec<String>,
}

/// How one operation was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// A permit matched and no forbid did.
    Allowed,
    /// A forbid matched; it wins over any permit.
    Forbidden,
    /// No policy permits it (the default).
    NoPermit,
    /// A candidate policy could not be evaluated, so the operation is refused (fail closed).
    EvaluationFailed,
    /// The bundle holds no policy at all.
    NoPolicies,
}

/// A policy Cedar could not evaluate for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvaluationError {
    pub policy_id: String,
    pub message: String,
}

// === impl Decision ===

impl Decision {
    /// True when every requested operation is allowed.
    pub fn allowed(&self) -> bool {
        !self.operations.is_empty()
            && self
                .operations
                .iter()
                .all(|o| o.outcome == Outcome::Allowed)
    }

    /// True when the grant is allowed but a determining permit asks for a human's approval: the
    /// grant is then pending, not issued.
    pub fn approval_required(&self) -> bool {
        self.allowed() && self.operations.iter().any(|o| !o.approval.is_empty())
    }

    /// Every determining policy id over all operations, sorted and deduplicated.
    pub fn policy_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .operations
            .iter()
            .flat_map(|o| o.determining.iter().cloned())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match (self.allowed(), self.approval_required()) {
            (true, true) => "pending approval",
            (true, false) => "allowed",
            (false, _) => "refused",
        };
        f.write_str(verdict)?;
        for o in &self.operations {
            write!(f, "; {:?}: {}", o.operation, o.outcome)?;
            if !o.determining.is_empty() {
                write!(f, " by {}", o.determining.join(", "))?;
            }
        }
        Ok(())
    }
}

// === impl OperationDecision ===

impl OperationDecision {
    pub(super) fn new(operation: &str, outcome: Outcome) -> Self {
        Self {
            operation: operation.to_owned(),
            outcome,
            determining: Vec::new(),
            errors: Vec::new(),
            approval: Vec::new(),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allowed => "allowed",
            Self::Forbidden => "forbidden",
            Self::NoPermit => "no policy permits it",
            Self::EvaluationFailed => "refused: a policy could not be evaluated",
            Self::NoPolicies => "refused: no policy is loaded",
        })
    }
}

/// Cedar's answers from the candidate buckets of one operation, merged.
#[derive(Default)]
pub(super) struct Verdict {
    permits: Vec<String>,
    forbids: Vec<String>,
    errors: BTreeMap<String, String>,
}

impl Verdict {
    /// Cedar's reason is the satisfied permits on Allow and the satisfied forbids on Deny, so the
    /// union over disjoint buckets is what one call over their union would report.
    pub(super) fn add(&mut self, response: &Response) {
        let reason = response.diagnostics().reason().map(ToString::to_string);
        match response.decision() {
            CedarDecision::Allow => self.permits.extend(reason),
            CedarDecision::Deny => self.forbids.extend(reason),
        }
        for error in response.diagnostics().errors() {
            let AuthorizationError::PolicyEvaluationError(e) = error;
            self.errors
                .insert(e.policy_id().to_string(), e.inner().to_string());
        }
    }

    pub(super) fn into_decision(
        mut self,
        operation: &str,
        approval: &HashSet<PolicyId>,
    ) -> OperationDecision {
        self.permits.sort();
        self.forbids.sort();
        let errors: Vec<EvaluationError> = self
            .errors
            .into_iter()
            .map(|(policy_id, message)| EvaluationError { policy_id, message })
            .collect();
        let (outcome, determining) = if !self.forbids.is_empty() {
            (Outcome::Forbidden, self.forbids)
        } else if !errors.is_empty() {
            let erred = errors.iter().map(|e| e.policy_id.clone()).collect();
            (Outcome::EvaluationFailed, erred)
        } else if !self.permits.is_empty() {
            (Outcome::Allowed, self.permits)
        } else {
            (Outcome::NoPermit, Vec::new())
        };
        let approval = match outcome {
            Outcome::Allowed => determining
                .iter()
                .filter(|id| approval.contains(&PolicyId::new(id.as_str())))
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        OperationDecision {
            operation: operation.to_owned(),
            outcome,
            determining,
            errors,
            approval,
        }
    }
}
