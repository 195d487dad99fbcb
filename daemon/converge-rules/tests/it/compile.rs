use converge_rules::{CompileError, RuleLimits, RuleSet};
use sha2::{Digest, Sha256};

use crate::{compile, source};

fn errors(rules: &[(&str, &str)]) -> Vec<CompileError> {
    let sources = rules
        .iter()
        .map(|(name, text)| source(name, text))
        .collect();
    RuleSet::compile(sources, &RuleLimits::default()).expect_err("should not compile")
}

#[test]
fn a_syntax_error_names_file_line_and_column() {
    let text = "let x = 1;\nif x > 1 {\n    notify(\"a\", \"b\")\n    notify(\"c\", \"d\");\n}\n";
    let errs = errors(&[("broken", text)]);
    assert_eq!(errs.len(), 1);
    assert_eq!(
        errs[0].to_string(),
        "rules/broken.rhai:4:5: Expecting ';' to terminate this statement"
    );
    assert_eq!(
        (errs[0].rule.as_str(), errs[0].line, errs[0].column),
        ("broken", 4, 5)
    );
}

#[test]
fn an_undefined_variable_is_a_compile_error() {
    let errs = errors(&[(
        "typo",
        "// guard\nif evnt.type == \"task.updated\" {\n    notify(\"a\", \"b\");\n}\n",
    )]);
    assert_eq!(
        errs,
        vec![CompileError {
            rule: "typo".into(),
            path: "rules/typo.rhai".into(),
            line: 2,
            column: 4,
            message: "Undefined variable: evnt".into(),
        }]
    );
}

#[test]
fn every_broken_rule_is_reported_at_once() {
    let errs = errors(&[
        ("first", "let a = ;"),
        ("fine", "if event.type == \"x\" { notify(\"a\", \"b\"); }"),
        ("third", "notify(\"a\", \"b\");\nlet b = undefined_thing;"),
    ]);
    let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        vec![
            "rules/first.rhai:1:9: Unexpected ';'".to_string(),
            "rules/third.rhai:2:9: Undefined variable: undefined_thing".to_string(),
        ]
    );
}

#[test]
fn eval_and_imports_are_not_available() {
    let errs = errors(&[("uses_eval", "eval(\"notify(1, 2)\");")]);
    assert_eq!((errs[0].line, errs[0].column), (1, 1));
    assert_eq!(errs[0].message, "reserved keyword 'eval' is disabled");

    // Refused when the rule compiles, as `eval` is, not on every event.
    let errs = errors(&[("imports", "import \"helpers\" as h;\nnotify(\"a\", \"b\");")]);
    assert_eq!((errs[0].line, errs[0].column), (1, 1));
    assert_eq!(errs[0].message, "'import' is a reserved keyword");
}

#[test]
fn the_hash_is_the_start_of_the_sources_sha256() {
    let text = "if event.type == \"x\" { notify(\"a\", \"b\"); }";
    let set = compile(&[("r", text)]);
    let full = hex::encode(Sha256::digest(text.as_bytes()));
    assert_eq!(set.rules()[0].hash, full[..16]);
    assert_eq!(set.rules()[0].name, "r");
    assert_eq!(set.rules()[0].path, std::path::Path::new("rules/r.rhai"));
}

#[test]
fn rule_sets_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<RuleSet>();
}

/// The daemon settles earlier results before an event a querying rule
/// handles: what counts is a call Rhai compiled, not the word in the text.
#[test]
fn a_rule_queries_when_it_calls_entities_not_when_it_mentions_it() {
    let rules = compile(&[
        (
            "mentions",
            "// entities(#{ kind: \"task\" }) would read the team\nlet text = \"entities(\";\nnotify(\"ops\", text);\n",
        ),
        (
            "in_own_fn",
            "fn blocked() { entities(#{ kind: \"task\", role: \"blocked\" }) }\nnotify(\"ops\", `${blocked().len()}`);\n",
        ),
        (
            "dropped",
            "if false { entities(#{ kind: \"task\" }); }\nnotify(\"ops\", \"x\");\n",
        ),
    ]);
    let queries: Vec<(&str, bool)> = rules
        .rules()
        .iter()
        .map(|rule| (rule.name.as_str(), rule.queries))
        .collect();
    assert_eq!(
        queries,
        [("mentions", false), ("in_own_fn", true), ("dropped", false)]
    );
}
