//! Task grants decided by Cedar policies.
//!
//! A [`PolicyBundle`] is a validated set of policies, loaded from `(file name, text)` pairs the
//! caller read; [`PolicyBundle::decide`] answers a [`GrantRequest`] with a [`Decision`] that names
//! the policies that made it. Pure logic: no files, no clock (the request carries `now`).
//!
//! Secure by default: an empty bundle refuses every grant, every requested operation must be
//! allowed on its own, and an evaluation error in any candidate policy refuses the operation (Cedar
//! itself would skip an erroring `forbid`, which fails open).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use cedar_policy::{
    Authorizer, Context, ContextCreationError, Effect, Entities, Entity, EntityAttrEvaluationError,
    EntityId, EntityTypeName, EntityUid, Policy, PolicyId, PolicySet, Request,
    RequestValidationError, RestrictedExpression, Schema, ValidationMode, Validator,
};
use lanyard_core::{SelectorSet, SpiffeId};
use miette::Diagnostic;

mod decision;
mod index;
mod schema;
mod shape;

pub use decision::{Decision, EvaluationError, OperationDecision, Outcome};
pub use schema::BASE_SCHEMA;

use decision::Verdict;
use index::{Index, TOOL_TYPE};

/// Largest policy file accepted, in bytes.
pub const MAX_POLICY_FILE_BYTES: usize = 1024 * 1024;
/// Most policies a bundle holds, over all its files.
pub const MAX_POLICIES: usize = 100_000;
/// Most operations one grant may ask for.
pub const MAX_OPERATIONS: usize = 32;
/// Longest operation name, in bytes.
pub const MAX_OPERATION_BYTES: usize = 128;
/// Longest audience (tool name), in bytes.
pub const MAX_AUDIENCE_BYTES: usize = 2048;
/// Longest `purpose` or `on_behalf_of`, in bytes.
pub const MAX_TEXT_BYTES: usize = 4096;
/// Longest `@id("…")`, in bytes.
pub const MAX_POLICY_ID_BYTES: usize = 256;

/// The annotation that names a policy; without it a policy is `<file>:<n>`.
const ID_ANNOTATION: &str = "id";
/// The annotation that makes a grant wait for a human.
const APPROVAL_ANNOTATION: &str = "approval";
const APPROVAL_REQUIRED: &str = "required";
/// The annotation that caps the lifetime of a credential a permit allows: `@max_ttl("300")`,
/// `@max_ttl("5m")`.
const MAX_TTL_ANNOTATION: &str = "max_ttl";
/// The annotation by which a permit accepts a task for someone named but not proved:
/// `@on_behalf_of("unverified")`. Without it, only a principal an identity provider vouched for
/// can be acted for.
const ON_BEHALF_OF_ANNOTATION: &str = "on_behalf_of";
const ON_BEHALF_OF_UNVERIFIED: &str = "unverified";
const WORKLOAD_TYPE: &str = "Workload";
const ACTION_TYPE: &str = "Action";

/// A set of validated grant policies and the index that picks the candidates for a request.
///
/// Immutable once loaded: a reload builds a new bundle and swaps it in only if it loaded, so a bad
/// file never replaces the set that is deciding.
pub struct PolicyBundle {
    /// Every policy, for [`PolicyBundle::decide_exhaustive`].
    all: PolicySet,
    index: Index,
    /// Permits annotated `@approval("required")`.
    approval: HashSet<PolicyId>,
    /// Permits annotated `@max_ttl`, in seconds.
    max_ttl: HashMap<String, u64>,
    /// Permits annotated `@on_behalf_of("unverified")`.
    unverified_principal: HashSet<String>,
    schema_text: String,
    types: Types,
}

/// The entity type names, parsed once.
struct Types {
    workload: EntityTypeName,
    action: EntityTypeName,
    tool: EntityTypeName,
}

/// Why a bundle was refused: every problem found, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy bundle refused: {}", DisplayProblems(.problems))]
#[non_exhaustive]
pub struct PolicyLoadError {
    /// Never empty.
    pub problems: Vec<PolicyProblem>,
}

/// One problem in one policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PolicyProblem {
    /// The file name as given to [`PolicyBundle::load`].
    pub file: String,
    /// 1-based; 0 when the problem is the file as a whole (its size, the number of policies).
    pub line: usize,
    /// 1-based, in characters; 0 when `line` is 0.
    pub column: usize,
    pub message: String,
}

/// What a workload asks for: a credential for `operations` on the tool `audience`.
#[derive(Debug, Clone)]
pub struct GrantRequest {
    pub principal: SpiffeId,
    pub selectors: SelectorSet,
    pub audience: String,
    pub operations: Vec<String>,
    pub ttl_seconds: u64,
    /// `""` when the caller gives none.
    pub purpose: String,
    /// `""` when the task acts for no one else.
    pub on_behalf_of: String,
    /// Whether an identity provider the server trusts vouched for `on_behalf_of` (false when
    /// it is empty).
    pub on_behalf_of_verified: bool,
    /// The issuer that vouched for `on_behalf_of`; `""` when unverified or empty.
    pub on_behalf_of_issuer: String,
    pub delegation_depth: u32,
    /// The SPIFFE ID that began the delegation chain; `""` for a task asked for directly.
    pub root_principal: String,
    /// The SPIFFE ID whose task this one derives from; `""` for a task asked for directly.
    pub parent_workload: String,
    pub now: SystemTime,
}

/// A request that cannot be put to the policies.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GrantError {
    #[error("the audience is empty")]
    EmptyAudience,
    #[error("the audience is longer than {MAX_AUDIENCE_BYTES} bytes")]
    AudienceTooLong,
    #[error("no operation requested")]
    NoOperations,
    #[error("{0} operations requested; at most {MAX_OPERATIONS}")]
    TooManyOperations(usize),
    #[error("an operation name is empty")]
    EmptyOperation,
    #[error("an operation name is longer than {MAX_OPERATION_BYTES} bytes")]
    OperationTooLong,
    #[error("operation {0:?} is requested twice")]
    DuplicateOperation(String),
    #[error("{field} contains a control character")]
    ControlCharacter { field: &'static str },
    #[error("{field} is longer than {MAX_TEXT_BYTES} bytes")]
    TextTooLong { field: &'static str },
    #[error("ttl_seconds {0} is out of range")]
    TtlOutOfRange(u64),
    #[error("the request time is before 1970")]
    TimeBeforeEpoch,
    #[error("building the principal entity")]
    Entity(#[source] Box<EntityAttrEvaluationError>),
    #[error("building the entity set")]
    Entities(#[source] Box<cedar_policy::entities_errors::EntitiesError>),
    #[error("building the request context")]
    Context(#[source] Box<ContextCreationError>),
    #[error("building the Cedar request")]
    Request(#[source] Box<RequestValidationError>),
}

// === impl PolicyBundle ===

impl PolicyBundle {
    /// A bundle with no policy: it refuses every grant.
    pub fn empty() -> Self {
        Self {
            all: PolicySet::new(),
            index: Index::default(),
            approval: HashSet::new(),
            max_ttl: HashMap::new(),
            unverified_principal: HashSet::new(),
            schema_text: schema::schema_text([]),
            types: Types::new(),
        }
    }

    /// Parses and validates `files` (`(name, text)` pairs) into a bundle, or returns every problem.
    ///
    /// Each policy's id is its `@id("…")` annotation, else `<file>:<n>` with `n` its 0-based position
    /// in the file. Duplicate ids, templates, and `@approval` values other than `"required"` are
    /// refused. The schema is [`BASE_SCHEMA`] plus the operations the policies name.
    pub fn load<N: AsRef<str>, T: AsRef<str>>(files: &[(N, T)]) -> Result<Self, PolicyLoadError> {
        let mut problems = Vec::new();
        let mut parsed: Vec<Loaded<'_>> = Vec::new();
        let mut ids: HashMap<String, usize> = HashMap::new();
        let mut count = 0_usize;
        for (file_index, (name, text)) in files.iter().enumerate() {
            let (name, text) = (name.as_ref(), text.as_ref());
            let file = File { name, text };
            if text.len() > MAX_POLICY_FILE_BYTES {
                problems.push(file.whole(format!(
                    "{} bytes; a policy file may hold at most {MAX_POLICY_FILE_BYTES}",
                    text.len()
                )));
                continue;
            }
            if let Some((offset, message)) = shape::check(text) {
                problems.push(file.at_offset(Some(offset), message));
                continue;
            }
            let set = match PolicySet::from_str(text) {
                Ok(set) => set,
                Err(errors) => {
                    problems.extend(errors.iter().map(|e| file.at_diagnostic(e)));
                    continue;
                }
            };
            for template in set.templates() {
                let at = file.find(&template.to_string(), 0);
                problems.push(
                    file.at_offset(
                        at,
                        "templates (`?principal`, `?resource`) are not supported; write the entity"
                            .into(),
                    ),
                );
            }
            let mut policies: Vec<(usize, &Policy)> =
                set.policies().map(|p| (position(p.id()), p)).collect();
            policies.sort_by_key(|(n, _)| *n);
            count += policies.len();
            if count > MAX_POLICIES {
                problems
                    .push(file.whole(format!("more than {MAX_POLICIES} policies in the bundle")));
                break;
            }
            // Policies come in file order, so each search starts where the previous policy did.
            let mut cursor = 0;
            for (n, policy) in policies {
                let offset = file.find(&policy.to_string(), cursor);
                if let Some(offset) = offset {
                    cursor = offset;
                }
                let id = match policy.annotation(ID_ANNOTATION) {
                    Some(id) => match check_policy_id(id) {
                        Ok(()) => id.to_owned(),
                        Err(message) => {
                            problems.push(file.at_offset(offset, message));
                            continue;
                        }
                    },
                    None => format!("{name}:{n}"),
                };
                if let Some(message) = check_approval(policy) {
                    problems.push(file.at_offset(offset, message));
                }
                if let Err(message) = max_ttl_of(policy) {
                    problems.push(file.at_offset(offset, message));
                }
                if let Some(message) = check_on_behalf_of(policy) {
                    problems.push(file.at_offset(offset, message));
                }
                if let Some(first) = ids.insert(id.clone(), file_index) {
                    problems.push(file.at_offset(
                        offset,
                        format!(
                            "duplicate policy id {id:?} (also in {})",
                            files[first].0.as_ref()
                        ),
                    ));
                    continue;
                }
                parsed.push(Loaded {
                    policy: policy.new_id(PolicyId::new(&id)),
                    file,
                });
            }
        }
        // Validate what parsed even when some file did not, so one load reports every problem.
        match Self::build(parsed, &mut problems) {
            Some(bundle) if problems.is_empty() => Ok(bundle),
            _ => Err(PolicyLoadError { problems }),
        }
    }

    /// Validates the parsed policies and indexes them; pushes what is wrong onto `problems`.
    fn build(parsed: Vec<Loaded<'_>>, problems: &mut Vec<PolicyProblem>) -> Option<Self> {
        let types = Types::new();
        let actions: Vec<String> = parsed
            .iter()
            .flat_map(|l| named_actions(&l.policy))
            .collect();
        let schema_text = schema::schema_text(actions.iter().map(String::as_str));
        let schema = match Schema::from_cedarschema_str(&schema_text) {
            Ok((schema, _warnings)) => schema,
            Err(e) => {
                problems.push(PolicyProblem {
                    file: "<schema>".into(),
                    line: 0,
                    column: 0,
                    message: format!("the generated schema does not parse: {e}"),
                });
                return None;
            }
        };
        let mut all = PolicySet::new();
        let mut files = HashMap::new();
        for loaded in &parsed {
            files.insert(loaded.policy.id().clone(), loaded.file);
            if let Err(e) = all.add(loaded.policy.clone()) {
                problems.push(loaded.file.whole(e.to_string()));
            }
        }
        let validation = Validator::new(schema).validate(&all, ValidationMode::Strict);
        for error in validation.validation_errors() {
            match files.get(error.policy_id()) {
                Some(file) => problems.push(file.at_diagnostic(error)),
                None => problems.push(PolicyProblem {
                    file: "<bundle>".into(),
                    line: 0,
                    column: 0,
                    message: error.to_string(),
                }),
            }
        }
        let mut index = Index::default();
        let mut approval = HashSet::new();
        let mut max_ttl = HashMap::new();
        let mut unverified_principal = HashSet::new();
        for loaded in &parsed {
            if let Ok(Some(seconds)) = max_ttl_of(&loaded.policy) {
                max_ttl.insert(loaded.policy.id().to_string(), seconds);
            }
            if let Err(e) = index.insert(&loaded.policy) {
                problems.push(loaded.file.whole(e.to_string()));
            }
            if loaded.policy.effect() == Effect::Permit
                && loaded.policy.annotation(APPROVAL_ANNOTATION) == Some(APPROVAL_REQUIRED)
            {
                approval.insert(loaded.policy.id().clone());
            }
            if loaded.policy.effect() == Effect::Permit
                && loaded.policy.annotation(ON_BEHALF_OF_ANNOTATION)
                    == Some(ON_BEHALF_OF_UNVERIFIED)
            {
                unverified_principal.insert(loaded.policy.id().to_string());
            }
        }
        Some(Self {
            all,
            index,
            approval,
            max_ttl,
            unverified_principal,
            schema_text,
            types,
        })
    }

    /// The longest lifetime, in seconds, the policies that allowed `decision` let a credential
    /// have: the smallest `@max_ttl` among its determining permits, or `None` if none has one.
    pub fn ttl_limit(&self, decision: &Decision) -> Option<u64> {
        decision
            .policy_ids()
            .iter()
            .filter_map(|id| self.max_ttl.get(id).copied())
            .min()
    }

    /// Whether the policies that allowed `decision` accept an unverified `on_behalf_of`: every
    /// operation was allowed by at least one permit annotated `@on_behalf_of("unverified")`.
    pub fn accepts_unverified_principal(&self, decision: &Decision) -> bool {
        decision.allowed()
            && decision.operations.iter().all(|operation| {
                operation
                    .determining
                    .iter()
                    .any(|id| self.unverified_principal.contains(id))
            })
    }

    /// The number of policies.
    pub fn len(&self) -> usize {
        self.all.policies().count()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// The policy ids, sorted.
    pub fn policy_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.all.policies().map(|p| p.id().to_string()).collect();
        ids.sort();
        ids
    }

    /// The schema this bundle was validated against: [`BASE_SCHEMA`] and the operations it names.
    pub fn schema_text(&self) -> &str {
        &self.schema_text
    }

    /// Decides `request`, evaluating only the policies whose scope can match each operation.
    pub fn decide(&self, request: &GrantRequest) -> Result<Decision, GrantError> {
        self.decide_with(request, |operation| {
            self.index.candidates(operation, &request.audience)
        })
    }

    /// Decides `request` by evaluating every policy: the reference [`PolicyBundle::decide`] must
    /// agree with, kept for tests and the benchmark. Slow with many policies.
    pub fn decide_exhaustive(&self, request: &GrantRequest) -> Result<Decision, GrantError> {
        self.decide_with(request, |_| vec![&self.all])
    }

    fn decide_with<'a>(
        &'a self,
        request: &GrantRequest,
        candidates: impl Fn(&str) -> Vec<&'a PolicySet>,
    ) -> Result<Decision, GrantError> {
        check_request(request)?;
        if self.is_empty() {
            let operations = request
                .operations
                .iter()
                .map(|operation| OperationDecision::new(operation, Outcome::NoPolicies))
                .collect();
            return Ok(Decision { operations });
        }
        let principal = self.principal(request)?;
        let resource = self.uid(&self.types.tool, &request.audience);
        let entities = Entities::from_entities(
            [
                principal.clone(),
                Entity::new_no_attrs(resource.clone(), HashSet::new()),
            ],
            None,
        )
        .map_err(|e| GrantError::Entities(Box::new(e)))?;
        let context = context(request)?;
        let authorizer = Authorizer::new();
        let mut operations = Vec::with_capacity(request.operations.len());
        for operation in &request.operations {
            let action = self.uid(&self.types.action, operation);
            let cedar_request = Request::new(
                principal.uid(),
                action,
                resource.clone(),
                context.clone(),
                None,
            )
            .map_err(|e| GrantError::Request(Box::new(e)))?;
            let mut verdict = Verdict::default();
            for set in candidates(operation) {
                let response = authorizer.is_authorized(&cedar_request, set, &entities);
                verdict.add(&response);
            }
            operations.push(verdict.into_decision(operation, &self.approval));
        }
        Ok(Decision { operations })
    }

    fn principal(&self, request: &GrantRequest) -> Result<Entity, GrantError> {
        let id = &request.principal;
        let selectors = request
            .selectors
            .iter()
            .map(|s| RestrictedExpression::new_string(s.to_string()));
        let attrs = HashMap::from([
            (
                "trust_domain".to_owned(),
                RestrictedExpression::new_string(id.trust_domain_name().to_owned()),
            ),
            (
                "path".to_owned(),
                RestrictedExpression::new_string(id.path().to_owned()),
            ),
            (
                "selectors".to_owned(),
                RestrictedExpression::new_set(selectors),
            ),
        ]);
        let uid = self.uid(&self.types.workload, id.as_str());
        Entity::new(uid, attrs, HashSet::new()).map_err(|e| GrantError::Entity(Box::new(e)))
    }

    fn uid(&self, type_name: &EntityTypeName, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(type_name.clone(), EntityId::new(id))
    }
}

impl Default for PolicyBundle {
    fn default() -> Self {
        Self::empty()
    }
}

impl fmt::Debug for PolicyBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyBundle")
            .field("policies", &self.len())
            .finish_non_exhaustive()
    }
}

// === impl Types ===

impl Types {
    fn new() -> Self {
        // These are constant, valid Cedar identifiers; a failure is a bug caught by every test.
        #[expect(clippy::expect_used, reason = "constant identifiers")]
        let parse = |name: &str| EntityTypeName::from_str(name).expect("a valid type name");
        Self {
            workload: parse(WORKLOAD_TYPE),
            action: parse(ACTION_TYPE),
            tool: parse(TOOL_TYPE),
        }
    }
}

// === impl PolicyProblem ===

impl fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

struct DisplayProblems<'a>(&'a [PolicyProblem]);

impl fmt::Display for DisplayProblems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// A policy on its way into a bundle, with the file it came from.
struct Loaded<'a> {
    policy: Policy,
    file: File<'a>,
}

#[derive(Clone, Copy)]
struct File<'a> {
    name: &'a str,
    text: &'a str,
}

impl File<'_> {
    fn whole(&self, message: String) -> PolicyProblem {
        PolicyProblem {
            file: self.name.to_owned(),
            line: 0,
            column: 0,
            message,
        }
    }

    /// A problem at the first label of a Cedar diagnostic, whose spans index this file's text.
    fn at_diagnostic(&self, diagnostic: &(impl Diagnostic + fmt::Display)) -> PolicyProblem {
        let offset = diagnostic
            .labels()
            .and_then(|mut labels| labels.next())
            .map(|label| label.offset());
        let mut message = diagnostic.to_string();
        if let Some(help) = diagnostic.help() {
            message.push_str(" (");
            message.push_str(&help.to_string());
            message.push(')');
        }
        self.at_offset(offset, message)
    }

    fn at_offset(&self, offset: Option<usize>, message: String) -> PolicyProblem {
        let Some(offset) = offset.filter(|o| *o <= self.text.len()) else {
            return self.whole(message);
        };
        let before = self.text.get(..offset).unwrap_or(self.text);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        PolicyProblem {
            file: self.name.to_owned(),
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
            message,
        }
    }

    /// Where a policy's source text starts, searching from byte `from`. Cedar keeps each policy's
    /// exact text but exposes no offset, so this finds the text.
    fn find(&self, policy_text: &str, from: usize) -> Option<usize> {
        let rest = self.text.get(from..)?;
        rest.find(policy_text.trim()).map(|at| from + at)
    }
}

/// The 0-based position Cedar gives a policy in its file (`policy<n>`).
fn position(id: &PolicyId) -> usize {
    id.to_string()
        .strip_prefix("policy")
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

fn check_policy_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        Err("@id is empty".into())
    } else if id.len() > MAX_POLICY_ID_BYTES {
        Err(format!("@id is longer than {MAX_POLICY_ID_BYTES} bytes"))
    } else if id.chars().any(char::is_control) {
        Err("@id contains a control character".into())
    } else {
        Ok(())
    }
}

fn check_approval(policy: &Policy) -> Option<String> {
    match policy.annotation(APPROVAL_ANNOTATION) {
        None => None,
        Some(APPROVAL_REQUIRED) if policy.effect() == Effect::Permit => None,
        Some(APPROVAL_REQUIRED) => Some("@approval applies to permit policies only".into()),
        Some(other) => Some(format!(
            "@approval({other:?}): the only value is \"required\""
        )),
    }
}

fn check_on_behalf_of(policy: &Policy) -> Option<String> {
    match policy.annotation(ON_BEHALF_OF_ANNOTATION) {
        None => None,
        Some(ON_BEHALF_OF_UNVERIFIED) if policy.effect() == Effect::Permit => None,
        Some(ON_BEHALF_OF_UNVERIFIED) => {
            Some("@on_behalf_of applies to permit policies only".into())
        }
        Some(other) => Some(format!(
            "@on_behalf_of({other:?}): the only value is \"unverified\""
        )),
    }
}

/// A permit's `@max_ttl` in seconds: digits, optionally followed by `s`, `m` or `h`, at least 1.
fn max_ttl_of(policy: &Policy) -> Result<Option<u64>, String> {
    let Some(value) = policy.annotation(MAX_TTL_ANNOTATION) else {
        return Ok(None);
    };
    if policy.effect() != Effect::Permit {
        return Err("@max_ttl applies to permit policies only".into());
    }
    let (digits, unit) = match value.char_indices().last() {
        Some((i, 's')) => (&value[..i], 1),
        Some((i, 'm')) => (&value[..i], 60),
        Some((i, 'h')) => (&value[..i], 3600),
        _ => (value, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0 && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.checked_mul(unit))
        .map(Some)
        .ok_or_else(|| {
            format!("@max_ttl({value:?}): expected a positive duration such as \"300\", \"5m\" or \"1h\"")
        })
}

/// The operations a policy's `action` scope names.
fn named_actions(policy: &Policy) -> Vec<String> {
    match policy.action_constraint() {
        cedar_policy::ActionConstraint::Any => Vec::new(),
        cedar_policy::ActionConstraint::Eq(uid) => vec![uid.id().unescaped().to_owned()],
        cedar_policy::ActionConstraint::In(uids) => {
            uids.iter().map(|u| u.id().unescaped().to_owned()).collect()
        }
    }
}

fn check_request(request: &GrantRequest) -> Result<(), GrantError> {
    if request.audience.is_empty() {
        return Err(GrantError::EmptyAudience);
    }
    if request.audience.len() > MAX_AUDIENCE_BYTES {
        return Err(GrantError::AudienceTooLong);
    }
    check_text("audience", &request.audience)?;
    check_text("purpose", &request.purpose)?;
    check_text("on_behalf_of", &request.on_behalf_of)?;
    check_text("on_behalf_of_issuer", &request.on_behalf_of_issuer)?;
    check_text("root_principal", &request.root_principal)?;
    check_text("parent_workload", &request.parent_workload)?;
    match request.operations.len() {
        0 => return Err(GrantError::NoOperations),
        n if n > MAX_OPERATIONS => return Err(GrantError::TooManyOperations(n)),
        _ => {}
    }
    let mut seen = HashSet::new();
    for operation in &request.operations {
        if operation.is_empty() {
            return Err(GrantError::EmptyOperation);
        }
        if operation.len() > MAX_OPERATION_BYTES {
            return Err(GrantError::OperationTooLong);
        }
        check_text("an operation name", operation)?;
        if !seen.insert(operation.as_str()) {
            return Err(GrantError::DuplicateOperation(operation.clone()));
        }
    }
    if i64::try_from(request.ttl_seconds).is_err() {
        return Err(GrantError::TtlOutOfRange(request.ttl_seconds));
    }
    Ok(())
}

fn check_text(field: &'static str, text: &str) -> Result<(), GrantError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(GrantError::TextTooLong { field });
    }
    if text.chars().any(char::is_control) {
        return Err(GrantError::ControlCharacter { field });
    }
    Ok(())
}

fn context(request: &GrantRequest) -> Result<Context, GrantError> {
    let time = request
        .now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| GrantError::TimeBeforeEpoch)?
        .as_secs();
    // Both fit: `check_request` bounded the TTL, and u64 seconds reach i64::MAX only in 292e9 years.
    let long = |n: u64| RestrictedExpression::new_long(i64::try_from(n).unwrap_or(i64::MAX));
    Context::from_pairs([
        ("ttl_seconds".to_owned(), long(request.ttl_seconds)),
        (
            "purpose".to_owned(),
            RestrictedExpression::new_string(request.purpose.clone()),
        ),
        (
            "on_behalf_of".to_owned(),
            RestrictedExpression::new_string(request.on_behalf_of.clone()),
        ),
        (
            "on_behalf_of_verified".to_owned(),
            RestrictedExpression::new_bool(request.on_behalf_of_verified),
        ),
        (
            "on_behalf_of_issuer".to_owned(),
            RestrictedExpression::new_string(request.on_behalf_of_issuer.clone()),
        ),
        ("time".to_owned(), long(time)),
        (
            "delegation_depth".to_owned(),
            long(u64::from(request.delegation_depth)),
        ),
        (
            "root_principal".to_owned(),
            RestrictedExpression::new_string(request.root_principal.clone()),
        ),
        (
            "parent_workload".to_owned(),
            RestrictedExpression::new_string(request.parent_workload.clone()),
        ),
    ])
    .map_err(|e| GrantError::Context(Box::new(e)))
}

#[cfg(test)]
mod tests;
