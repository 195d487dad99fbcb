//! `Script`: a rule's calls and switches as Rhai compiled them, for lints.

use converge_rules::script::{Argument, Call, Switch};
use converge_rules::{RuleLimits, Script};
use serde_json::json;

use crate::{compile, entity_after, event, now, source};

fn script(text: &str) -> Script {
    match Script::compile(&source("r", text), &RuleLimits::default()) {
        Ok(script) => script,
        Err(e) => panic!("script does not compile: {e}"),
    }
}

fn text(s: &str) -> Argument {
    Argument::Text(s.into())
}

fn path(parts: &[&str]) -> Argument {
    Argument::Path(parts.iter().map(|p| p.to_string()).collect())
}

fn call(name: &str, arguments: Vec<Argument>, line: usize, column: usize) -> Call {
    Call {
        name: name.into(),
        arguments,
        line,
        column,
    }
}

#[test]
fn calls_are_read_as_rhai_compiled_them() {
    let script = script(
        r#"// notify("in", "a comment")
const CHANNEL = "email";
let note = `see ${notify("ana", "in an interpolation")}`;
fn hold() { hold_send("sms", "in a function"); }
fn notify(to) { to }
"bo".escalate(`a method call`);
notify("my own function");
if false { escalate("ops", "never compiled"); }
emit("task." + "folded", #{ reason: note });
release_send(CHANNEL, note);
"#,
    );
    assert_eq!(
        script.calls(),
        [
            call(
                "notify",
                vec![text("ana"), text("in an interpolation")],
                3,
                19
            ),
            call("hold_send", vec![text("sms"), text("in a function")], 4, 13),
            call("escalate", vec![text("bo"), text("a method call")], 6, 6),
            call("emit", vec![text("task.folded"), Argument::Other], 9, 1),
            call("release_send", vec![text("email"), path(&["note"])], 10, 1),
        ]
    );
}

#[test]
fn comparisons_are_calls_of_their_operator() {
    let script = script(
        "let x = #{ event: #{ type: 1 } };\nif event.type == \"task.a\" || \"task.b\" != event.type || x.event.type == \"task.c\" { }\n",
    );
    let compared: Vec<_> = script
        .calls()
        .iter()
        .filter(|c| c.name == "==" || c.name == "!=")
        .map(|c| {
            (
                c.arguments[0].is_path(&["event", "type"]),
                c.text(0),
                c.text(1),
            )
        })
        .collect();
    assert_eq!(
        compared,
        [
            (true, None, Some("task.a")),
            (false, Some("task.b"), None),
            (false, None, Some("task.c")),
        ]
    );
    assert!(script.calls()[1].arguments[1].is_path(&["event", "type"]));
}

#[test]
fn a_call_in_a_case_of_several_values_is_one_call() {
    let script =
        script("switch event.type { \"a\" | \"b\" => notify(\"ana\", \"a or b\"), _ => () }\n");
    let names: Vec<_> = script.calls().iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["notify"]);
}

#[test]
fn switches_on_a_path_give_their_string_labels() {
    let script = script(
        r#"let hours = switch event.type {
    "task.remind" => `24 ${"h"}ours`,
    "task.a" | "task.b" if entity != () => #{ x: "not.a.case" },
    "task.c" => { let y = "not.a.case"; switch y { "inner" => 1, _ => 2 } },
    _ => switch 1 + 1 { 2 => "two", _ => "other" },
};
switch (event.data.kind) { "k" => 1 }
"#,
    );
    assert_eq!(
        script.switches(),
        [
            Switch {
                subject: path(&["event", "type"]),
                labels: vec![
                    "task.remind".into(),
                    "task.a".into(),
                    "task.b".into(),
                    "task.c".into()
                ],
            },
            Switch {
                subject: path(&["y"]),
                labels: vec!["inner".into()],
            },
            Switch {
                subject: path(&["event", "data", "kind"]),
                labels: vec!["k".into()],
            },
        ]
    );
}

#[test]
fn a_script_that_does_not_compile_gives_its_error() {
    let error = Script::compile(&source("r", "let x = evnt.id;\n"), &RuleLimits::default())
        .expect_err("an undefined variable");
    assert_eq!(
        error.to_string(),
        "rules/r.rhai:1:9: Undefined variable: evnt"
    );
}

/// The position of a call is the one the decision it makes names in its
/// trace, so a lint and a trace point at the same place; and a call Rhai
/// sends to the rule's own function is no call of converge's.
#[test]
fn a_call_is_where_its_decision_says_it_was_made() {
    let rule = "let n = `${notify(\"ana\", \"one\")}`;\n\"bo\".notify(\"two\");\nfn escalate(why) { why }\n\"cy\".escalate(\"mine\");\nescalate(\"mine too\");\n";
    let set = compile(&[("r", rule)]);
    let e = event("task.updated", Some("task/t-1"), json!({}));
    let mut state = entity_after(&e, None);
    let made: Vec<_> = set
        .evaluate(&e, Some(&mut state), now())
        .decisions
        .iter()
        .map(|d| {
            let at = &d.trace.as_ref().expect("a trace").at;
            (at.line as usize, at.column as usize)
        })
        .collect();
    let seen: Vec<_> = script(rule)
        .calls()
        .iter()
        .map(|c| (c.line, c.column))
        .collect();
    assert_eq!(made, seen);
    assert_eq!(made, [(1, 12), (2, 6)]);
}
