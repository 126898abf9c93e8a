#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lanyard_core::{Selector, SelectorSet, SpiffeId};

use super::*;

const AGENT: &str = "spiffe://example.org/ns/prod/sa/agent";
const NOW: u64 = 1_800_000_000;

fn request(audience: &str, operations: &[&str]) -> GrantRequest {
    GrantRequest {
        principal: SpiffeId::parse(AGENT).unwrap(),
        selectors: ["k8s:ns:prod", "unix:uid:1000"]
            .iter()
            .map(|s| s.parse::<Selector>().unwrap())
            .collect(),
        audience: audience.into(),
        operations: operations.iter().map(|s| (*s).to_owned()).collect(),
        ttl_seconds: 300,
        purpose: "summarise tickets".into(),
        on_behalf_of: "spiffe://example.org/human/alice".into(),
        on_behalf_of_verified: true,
        on_behalf_of_issuer: "https://idp.example.org".into(),
        delegation_depth: 1,
        root_principal: String::new(),
        parent_workload: String::new(),
        now: UNIX_EPOCH + Duration::from_secs(NOW),
    }
}

fn bundle(text: &str) -> PolicyBundle {
    match PolicyBundle::load(&[("main.cedar", text)]) {
        Ok(bundle) => bundle,
        Err(e) => panic!("{e}"),
    }
}

fn decide(bundle: &PolicyBundle, request: &GrantRequest) -> Decision {
    let decision = bundle.decide(request).unwrap();
    assert_eq!(
        decision,
        bundle.decide_exhaustive(request).unwrap(),
        "{request:?}"
    );
    decision
}

fn refused(text: &str) -> Vec<PolicyProblem> {
    PolicyBundle::load(&[("bad.cedar", text)])
        .unwrap_err()
        .problems
}

const TICKETS: &str = r#"
@id("read-tickets")
permit(principal, action == Action::"read", resource == Tool::"tickets")
when { principal.trust_domain == "example.org" };
"#;

#[test]
fn allows_read_refuses_write_and_unknown_tool() {
    let b = bundle(TICKETS);
    let d = decide(&b, &request("tickets", &["read"]));
    assert!(d.allowed(), "{d}");
    assert_eq!(d.policy_ids(), ["read-tickets"]);
    assert!(!d.approval_required());

    let d = decide(&b, &request("tickets", &["read", "write"]));
    assert!(!d.allowed());
    assert_eq!(d.operations[1].outcome, Outcome::NoPermit);
    assert!(d.operations[1].determining.is_empty());

    let d = decide(&b, &request("payroll", &["read"]));
    assert_eq!(d.operations[0].outcome, Outcome::NoPermit);
}

#[test]
fn ids_default_to_file_and_position() {
    let b = PolicyBundle::load(&[
        ("a.cedar", "permit(principal, action, resource);\npermit(principal, action == Action::\"x\", resource);"),
        ("b.cedar", "@id(\"named\") forbid(principal, action == Action::\"y\", resource);"),
    ])
    .unwrap();
    assert_eq!(b.policy_ids(), ["a.cedar:0", "a.cedar:1", "named"]);
    assert_eq!(b.len(), 3);
    assert!(b.schema_text().contains("action \"x\""));
    assert!(b.schema_text().contains("action \"y\""));
}

#[test]
fn forbid_overrides_permit() {
    let b = bundle(&format!(
        "{TICKETS}\n@id(\"no-agents-on-tickets\") forbid(principal, action, resource == Tool::\"tickets\") \
         when {{ principal.path like \"/ns/prod/*\" }};"
    ));
    let d = decide(&b, &request("tickets", &["read"]));
    assert!(!d.allowed());
    assert_eq!(d.operations[0].outcome, Outcome::Forbidden);
    assert_eq!(d.operations[0].determining, ["no-agents-on-tickets"]);
}

#[test]
fn context_conditions() {
    let b = bundle(
        r#"
@id("short-shallow-business-hours")
permit(principal, action == Action::"read", resource == Tool::"tickets")
when {
  context.ttl_seconds <= 600 &&
  context.delegation_depth <= 2 &&
  context.time >= 1799990000 && context.time < 1800010000 &&
  context.purpose != "" &&
  context.on_behalf_of like "spiffe://example.org/human/*"
};
"#,
    );
    let ok = request("tickets", &["read"]);
    assert!(decide(&b, &ok).allowed());

    let mut r = ok.clone();
    r.ttl_seconds = 3600;
    assert!(!decide(&b, &r).allowed());
    let mut r = ok.clone();
    r.delegation_depth = 3;
    assert!(!decide(&b, &r).allowed());
    let mut r = ok.clone();
    r.now = UNIX_EPOCH + Duration::from_secs(1_800_010_000);
    assert!(!decide(&b, &r).allowed());
    let mut r = ok.clone();
    r.purpose = String::new();
    assert!(!decide(&b, &r).allowed());
    let mut r = ok;
    r.on_behalf_of = "spiffe://evil.org/human/alice".into();
    assert!(!decide(&b, &r).allowed());
}

#[test]
fn selectors_condition() {
    let b = bundle(
        r#"permit(principal, action, resource) when { principal.selectors.contains("k8s:ns:prod") };"#,
    );
    let mut r = request("anything", &["read", "write"]);
    assert!(decide(&b, &r).allowed());
    r.selectors = SelectorSet::from_iter([Selector::new("k8s", "ns:dev").unwrap()]);
    assert!(!decide(&b, &r).allowed());
}

#[test]
fn principal_by_spiffe_id() {
    let b = bundle(&format!(
        "permit(principal == Workload::\"{AGENT}\", action == Action::\"read\", resource);"
    ));
    assert!(decide(&b, &request("t", &["read"])).allowed());
    let mut r = request("t", &["read"]);
    r.principal = SpiffeId::parse("spiffe://example.org/other").unwrap();
    assert!(!decide(&b, &r).allowed());
}

#[test]
fn syntax_error_names_line_and_reason() {
    let problems =
        refused("permit(principal, action, resource);\n\npermit(principal, action resource);\n");
    assert_eq!(problems.len(), 1, "{problems:?}");
    let p = &problems[0];
    assert_eq!((p.file.as_str(), p.line), ("bad.cedar", 3), "{p}");
    assert!(p.column > 1, "{p}");
    assert!(!p.message.is_empty());
    let shown = PolicyLoadError { problems }.to_string();
    assert!(shown.contains("bad.cedar:3:"), "{shown}");
}

#[test]
fn schema_violations_are_refused_with_their_line() {
    let problems = refused(
        "permit(principal, action, resource);\npermit(principal, action, resource)\n  when { principal.team == \"x\" };\n",
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].line, 3, "{}", problems[0]);
    assert!(problems[0].message.contains("team"), "{}", problems[0]);

    let problems =
        refused("permit(principal, action, resource) when { context.ttl_seconds == \"long\" };");
    assert_eq!(problems.len(), 1, "{problems:?}");
    let problems = refused("permit(principal == User::\"alice\", action, resource);");
    assert_eq!(problems.len(), 1, "{problems:?}");
    let problems = refused("permit(principal, action, resource) when { context.missing > 1 };");
    assert_eq!(problems.len(), 1, "{problems:?}");
}

#[test]
fn every_problem_is_reported_and_duplicates_refused() {
    let err = PolicyBundle::load(&[
        ("a.cedar", "@id(\"p\") permit(principal, action, resource);"),
        (
            "b.cedar",
            "permit(principal, action, resource);\n@id(\"p\") permit(principal, action, resource);",
        ),
        (
            "c.cedar",
            "permit(principal, action, resource) when { principal.nope };",
        ),
        (
            "d.cedar",
            "permit(principal, action, resource == ?resource);",
        ),
    ])
    .unwrap_err();
    let files: Vec<(&str, usize)> = err
        .problems
        .iter()
        .map(|p| (p.file.as_str(), p.line))
        .collect();
    assert!(files.contains(&("b.cedar", 2)), "{err}");
    assert!(files.contains(&("c.cedar", 1)), "{err}");
    assert!(files.contains(&("d.cedar", 1)), "{err}");
    assert!(
        err.to_string().contains("duplicate policy id \"p\""),
        "{err}"
    );
}

#[test]
fn empty_bundle_refuses_everything() {
    for b in [
        PolicyBundle::empty(),
        PolicyBundle::load::<&str, &str>(&[]).unwrap(),
        bundle("// nothing\n"),
    ] {
        assert!(b.is_empty());
        let d = b.decide(&request("tickets", &["read"])).unwrap();
        assert!(!d.allowed());
        assert_eq!(d.operations[0].outcome, Outcome::NoPolicies);
        assert!(d.to_string().contains("no policy is loaded"), "{d}");
    }
}

#[test]
fn approval_required() {
    let b = bundle(
        r#"
@id("read") permit(principal, action == Action::"read", resource);
@id("delete") @approval("required") permit(principal, action == Action::"delete", resource);
"#,
    );
    let d = decide(&b, &request("t", &["read"]));
    assert!(d.allowed() && !d.approval_required());
    let d = decide(&b, &request("t", &["read", "delete"]));
    assert!(d.allowed() && d.approval_required(), "{d}");
    assert_eq!(d.operations[1].approval, ["delete"]);
    assert_eq!(
        d.to_string(),
        "pending approval; \"read\": allowed by read; \"delete\": allowed by delete"
    );

    assert_eq!(
        refused("@approval(\"maybe\") permit(principal, action, resource);").len(),
        1
    );
    assert_eq!(
        refused("@approval(\"required\") forbid(principal, action, resource);").len(),
        1
    );
}

#[test]
fn any_operation_name_is_admitted() {
    let b = bundle(
        r#"permit(principal, action in [Action::"tickets.read", Action::"say \"hi\"", Action::"ünïcode op"], resource);"#,
    );
    for op in ["tickets.read", "say \"hi\"", "ünïcode op"] {
        assert!(decide(&b, &request("t", &[op])).allowed(), "{op}");
    }
    assert!(!decide(&b, &request("t", &["other"])).allowed());
}

#[test]
fn hostile_requests_are_typed_errors() {
    let b = bundle(TICKETS);
    let cases: Vec<(GrantRequest, &str)> = vec![
        (request("", &["read"]), "audience is empty"),
        (
            request(&"a".repeat(MAX_AUDIENCE_BYTES + 1), &["read"]),
            "audience is longer",
        ),
        (request("t", &[]), "no operation"),
        (
            request("t", &vec!["x"; MAX_OPERATIONS + 1]),
            "operations requested",
        ),
        (request("t", &[""]), "is empty"),
        (
            request("t", &[&"o".repeat(MAX_OPERATION_BYTES + 1)]),
            "longer than",
        ),
        (request("t", &["read", "read"]), "twice"),
        (request("t\n", &["read"]), "control character"),
        (request("t", &["re\0ad"]), "control character"),
    ];
    for (r, expected) in cases {
        let e = b.decide(&r).unwrap_err().to_string();
        assert!(e.contains(expected), "{e} / {expected}");
    }
    let mut r = request("t", &["read"]);
    r.ttl_seconds = u64::MAX;
    assert!(matches!(b.decide(&r), Err(GrantError::TtlOutOfRange(_))));
    let mut r = request("t", &["read"]);
    r.now = UNIX_EPOCH - Duration::from_secs(1);
    assert!(matches!(b.decide(&r), Err(GrantError::TimeBeforeEpoch)));
    let mut r = request("t", &["read"]);
    r.purpose = "p".repeat(MAX_TEXT_BYTES + 1);
    assert!(matches!(b.decide(&r), Err(GrantError::TextTooLong { .. })));
}

#[test]
fn hostile_files_are_refused() {
    let big = "// x\n".repeat(MAX_POLICY_FILE_BYTES / 5 + 1);
    let problems = refused(&big);
    assert_eq!(problems[0].line, 0);
    for text in [
        "permit(",
        "\u{0}",
        "@id(\"\") permit(principal, action, resource);",
        "permit(principal, action, resource) when { \"unterminated };",
    ] {
        assert!(!refused(text).is_empty(), "{text:?}");
    }
    // Deep or long expressions overflow Cedar's recursive parser: refused before it sees them.
    let when = |body: String| format!("permit(principal, action, resource)\n when {{ {body} }};");
    for (body, reason) in [
        (
            format!("{}true{}", "(".repeat(5000), ")".repeat(5000)),
            "nested deeper",
        ),
        (
            format!("{}1{} == 1", "[".repeat(40), "]".repeat(40)),
            "nested deeper",
        ),
        (
            "if true then ".repeat(500) + "true" + &" else false".repeat(500),
            "`if`",
        ),
        (vec!["1"; 20_000].join(" + ") + " == 1", "operators"),
    ] {
        let problems = refused(&when(body));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].line, 2);
        assert!(problems[0].message.contains(reason), "{}", problems[0]);
    }
    // Limits are per policy, and strings and comments do not count.
    let many: String = (0..50)
        .map(|i| format!("permit(principal, action, resource) when {{ context.purpose == \"((((((((((((((((((( && {i}\" && context.ttl_seconds + 1 > 0 }}; // ((((((((((((((((((((\n"))
        .collect();
    assert_eq!(bundle(&many).len(), 50);
}

#[test]
fn evaluation_errors_refuse() {
    // Overflow is a runtime error the validator cannot see; a forbid that errs must not fail open.
    let b = bundle(
        r#"
@id("allow") permit(principal, action, resource);
@id("overflow") forbid(principal, action, resource) when { context.ttl_seconds * 9223372036854775807 > 0 };
"#,
    );
    let d = decide(&b, &request("t", &["read"]));
    assert!(!d.allowed(), "{d}");
    assert_eq!(d.operations[0].outcome, Outcome::EvaluationFailed);
    assert_eq!(d.operations[0].determining, ["overflow"]);
    assert_eq!(d.operations[0].errors.len(), 1);
}

#[test]
fn unused_system_time_import_guard() {
    // `now` is whatever the caller passes; a time in the far future is fine.
    let b = bundle(TICKETS);
    let mut r = request("tickets", &["read"]);
    r.now = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX) * 4);
    assert!(decide(&b, &r).allowed());
}

mod equivalence;

#[test]
fn the_documented_examples_load_and_decide() {
    let doc = include_str!("../../../../docs/policy.md");
    let start = doc.find("```cedar\n").unwrap() + "```cedar\n".len();
    let text = &doc[start..start + doc[start..].find("```").unwrap()];
    let b = bundle(text);
    assert_eq!(b.len(), 4);
    let d = decide(&b, &request("tickets", &["read", "comment"]));
    assert_eq!(
        d.policy_ids(),
        ["prod-read-tickets", "write-tickets-for-humans"],
        "{d}"
    );
    let d = decide(&b, &request("wiki", &["delete"]));
    assert!(d.approval_required(), "{d}");
    let d = decide(&b, &request("payroll", &["delete"]));
    assert_eq!(d.operations[0].determining, ["no-delegated-payroll"], "{d}");
}

#[test]
fn the_largest_accepted_shape_loads_and_decides() {
    // 14 levels of parentheses inside the scope's `(` and the `when` braces, 8 `if`s, ~1,000
    // operators: all within the limits, so it must not overflow a test thread's 2 MiB stack.
    let ifs = "if true then ".repeat(8) + "true" + &" else false".repeat(8);
    let chain = vec!["context.ttl_seconds"; 495].join(" + ");
    let body = format!("{}{ifs} && {chain} > 0{}", "(".repeat(14), ")".repeat(14));
    let text = format!("permit(principal, action, resource) when {{ {body} }};");
    assert!(shape::check(&text).is_none());
    let b = bundle(&text);
    assert!(decide(&b, &request("t", &["read"])).allowed());
}

#[test]
fn max_ttl_caps_the_lifetime_of_an_allowed_grant() {
    let bundle = bundle(
        r#"
@id("read") @max_ttl("5m") permit(principal, action == Action::"read", resource);
@id("list") @max_ttl("120") permit(principal, action == Action::"list", resource);
@id("write") permit(principal, action == Action::"write", resource);
"#,
    );
    let d = decide(&bundle, &request("tickets", &["read"]));
    assert_eq!(bundle.ttl_limit(&d), Some(300));
    let d = decide(&bundle, &request("tickets", &["read", "list"]));
    assert_eq!(bundle.ttl_limit(&d), Some(120));
    let d = decide(&bundle, &request("tickets", &["write"]));
    assert_eq!(bundle.ttl_limit(&d), None);
}

#[test]
fn a_bad_max_ttl_is_refused_at_load() {
    for bad in [
        r#"@max_ttl("") permit(principal, action, resource);"#,
        r#"@max_ttl("0") permit(principal, action, resource);"#,
        r#"@max_ttl("5d") permit(principal, action, resource);"#,
        r#"@max_ttl("-1") permit(principal, action, resource);"#,
        r#"@max_ttl("99999999999999999999") permit(principal, action, resource);"#,
        r#"@max_ttl("5m") forbid(principal, action, resource);"#,
    ] {
        let problems = refused(bad);
        assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
        assert!(problems[0].message.contains("@max_ttl"), "{problems:?}");
    }
}

#[test]
fn policies_see_the_delegation_chain() {
    let bundle = bundle(
        r#"
@id("delegated-read")
permit(principal, action == Action::"read", resource == Tool::"tickets")
when {
  context.delegation_depth <= 2 &&
  context.root_principal == "spiffe://example.org/orchestrator" &&
  context.parent_workload like "spiffe://example.org/*"
};
"#,
    );
    let mut r = request("tickets", &["read"]);
    r.delegation_depth = 1;
    r.root_principal = "spiffe://example.org/orchestrator".into();
    r.parent_workload = "spiffe://example.org/orchestrator".into();
    assert!(decide(&bundle, &r).allowed());
    r.root_principal = "spiffe://example.org/someone-else".into();
    assert!(!decide(&bundle, &r).allowed());
    r.root_principal = "spiffe://example.org/orchestrator".into();
    r.delegation_depth = 3;
    assert!(!decide(&bundle, &r).allowed());
    r.delegation_depth = 1;
    r.parent_workload = "bad\u{0}".into();
    assert!(matches!(
        bundle.decide(&r),
        Err(GrantError::ControlCharacter {
            field: "parent_workload"
        })
    ));
}

#[test]
fn policies_see_whether_the_principal_was_verified_and_by_whom() {
    let b = bundle(
        r#"permit (principal, action == Action::"read", resource)
           when { context.on_behalf_of_verified && context.on_behalf_of_issuer == "https://idp.example.org" };"#,
    );
    let mut r = request("tickets", &["read"]);
    assert!(decide(&b, &r).allowed());
    r.on_behalf_of_issuer = "https://evil.example".into();
    assert!(!decide(&b, &r).allowed());
    r.on_behalf_of_issuer = String::new();
    r.on_behalf_of_verified = false;
    assert!(!decide(&b, &r).allowed());
}

#[test]
fn an_unverified_principal_is_accepted_only_by_permits_that_say_so() {
    let b = bundle(
        r#"@id("names") @on_behalf_of("unverified")
           permit (principal, action == Action::"read", resource);
           @id("plain")
           permit (principal, action == Action::"list", resource);"#,
    );
    let read = decide(&b, &request("tickets", &["read"]));
    assert!(b.accepts_unverified_principal(&read));
    // Every operation must be allowed by such a permit: `list` is not.
    let both = decide(&b, &request("tickets", &["read", "list"]));
    assert!(both.allowed());
    assert!(!b.accepts_unverified_principal(&both));
    let list = decide(&b, &request("tickets", &["list"]));
    assert!(!b.accepts_unverified_principal(&list));
    // A refused decision accepts nothing.
    let refused = decide(&b, &request("tickets", &["delete"]));
    assert!(!b.accepts_unverified_principal(&refused));
}

#[test]
fn on_behalf_of_annotation_values_are_checked() {
    for (text, message) in [
        (
            r#"@on_behalf_of("anyone") permit (principal, action, resource);"#,
            r#"@on_behalf_of("anyone"): the only value is "unverified""#,
        ),
        (
            r#"@on_behalf_of("unverified") forbid (principal, action, resource);"#,
            "@on_behalf_of applies to permit policies only",
        ),
    ] {
        let Err(e) = PolicyBundle::load(&[("main.cedar", text)]) else {
            panic!("{text} loaded");
        };
        assert!(
            e.problems.iter().any(|p| p.message == message),
            "{text}: {e}"
        );
    }
}
