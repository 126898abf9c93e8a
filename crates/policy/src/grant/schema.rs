//! The Cedar schema lanyard publishes for grant policies.
//!
//! Entity types and the context are fixed; the actions are not, because operations are named by the
//! tools, not by lanyard. The schema a bundle validates against is [`BASE_SCHEMA`] plus one action
//! declaration per operation the bundle's policies name in their `action` scope.

use std::collections::BTreeSet;
use std::fmt::Write as _;

/// The fixed part of the schema: the principal and resource types and the request context.
///
/// No namespace, so policies read `Workload::"spiffe://…"`, `Action::"read"`, `Tool::"…"`.
/// Every context attribute is required: lanyard always supplies all of them (`on_behalf_of` and
/// `purpose` are the empty string when the task names none), so policies need no `has` tests.
pub const BASE_SCHEMA: &str = r#"// lanyard grant schema
entity Workload = {
  // The trust domain name of the caller's SPIFFE ID, e.g. "example.org".
  trust_domain: String,
  // The path of the caller's SPIFFE ID, e.g. "/ns/prod/sa/agent".
  path: String,
  // The caller's attested selectors, each "type:value", e.g. "k8s:ns:prod".
  selectors: Set<String>,
};
// A tool, named by the audience its credential is for.
entity Tool;
type TaskContext = {
  // The lifetime asked for the credential, in seconds.
  ttl_seconds: Long,
  // Free text the caller gives for the task ("" when none).
  purpose: String,
  // Who the task acts for, e.g. a human's ID ("" when none): the `sub` of an identity
  // provider's token, or a name given unverified.
  on_behalf_of: String,
  // Whether an identity provider the server trusts vouched for `on_behalf_of`.
  on_behalf_of_verified: Bool,
  // The `iss` of that provider ("" when unverified or none).
  on_behalf_of_issuer: String,
  // The time of the request, in Unix seconds.
  time: Long,
  // How many delegation hops lie above this task (0: asked for directly).
  delegation_depth: Long,
  // The SPIFFE ID of the workload that began the chain ("" when asked for directly).
  root_principal: String,
  // The SPIFFE ID of the workload whose task this one derives from ("" when asked for directly).
  parent_workload: String,
};
"#;

/// An action always declared, so that a policy whose scope names no operation (`action`) is still
/// type-checked: the validator checks such a policy once per declared action, and with none it
/// would check nothing.
pub(crate) const ANY_OPERATION: &str = "lanyard:any-operation";

/// The full schema text for a bundle whose policies name `actions`.
pub(crate) fn schema_text<'a>(actions: impl IntoIterator<Item = &'a str>) -> String {
    let mut actions: BTreeSet<&str> = actions.into_iter().collect();
    actions.insert(ANY_OPERATION);
    let mut text = String::from(BASE_SCHEMA);
    text.push_str("// Operations named by the loaded policies.\n");
    for action in actions {
        text.push_str("action ");
        push_quoted(&mut text, action);
        text.push_str(
            " appliesTo { principal: Workload, resource: Tool, context: TaskContext };\n",
        );
    }
    text
}

/// Writes `s` as a Cedar string literal. Cedar unescapes `\"`, `\\` and `\u{…}` like Rust.
fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii_graphic() || c == ' ' => out.push(c),
            // Writing to a String cannot fail.
            c => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
        }
    }
    out.push('"');
}
