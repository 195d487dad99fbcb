//! The second rule set of `converge replay --diff`/`--without`: the first
//! set's live rules with a few changed, so that "what does my edit of this
//! rule change" is answered with every other rule running on both sides.
//!
//! A rule is matched by the name its decisions carry (the file stem, or its
//! header's `name`): a `--diff` rule takes the place of the first set's rule
//! of that name, or runs after the first set's rules when it has none;
//! `--without` leaves a rule out.

use std::collections::HashSet;
use std::path::PathBuf;

use converge_rules::{RuleLimits, RuleSet, RuleSource};
use serde_json::{Value, json};

/// How the second set differs from the first, for the summary.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Rules of the first set run from another file: name and file.
    pub replaced: Vec<(String, PathBuf)>,
    /// Rules the first set does not have.
    pub added: Vec<(String, PathBuf)>,
    /// Rules of the first set the second leaves out.
    pub left_out: Vec<String>,
}

impl Changes {
    /// "b is a with handoff from b/handoff.rhai, digest added from x.rhai,
    /// weekly left out".
    pub fn line(&self) -> String {
        let mut parts: Vec<String> = self
            .replaced
            .iter()
            .map(|(name, path)| format!("{name} from {}", path.display()))
            .collect();
        parts.extend(
            self.added
                .iter()
                .map(|(name, path)| format!("{name} added from {}", path.display())),
        );
        parts.extend(self.left_out.iter().map(|name| format!("{name} left out")));
        format!("b is a with {}", parts.join(", "))
    }

    pub fn json(&self) -> Value {
        let named = |list: &[(String, PathBuf)]| -> Vec<Value> {
            list.iter()
                .map(|(name, path)| json!({"rule": name, "file": path.display().to_string()}))
                .collect()
        };
        json!({
            "replaced": named(&self.replaced),
            "added": named(&self.added),
            "left_out": self.left_out,
        })
    }
}

/// Compiles the second set from the first set's live rules (`first`, as
/// compiled from `first_sources`), the rules of `diff` and the names in
/// `without`. Every problem is reported: a rule that does not compile, a
/// name to leave out that the first set does not have, a name both
/// replaced and left out.
pub fn compile(
    first: &RuleSet,
    first_sources: Vec<RuleSource>,
    diff: Vec<RuleSource>,
    without: &[String],
    limits: &RuleLimits,
) -> Result<(RuleSet, Changes), String> {
    let names_of = |set: &RuleSet, source: &RuleSource| -> String {
        set.rules()
            .iter()
            .find(|rule| rule.path == source.path)
            .map_or_else(|| source.name.clone(), |rule| rule.name.clone())
    };
    if diff.is_empty() && without.is_empty() {
        return Err("--diff names no rule file (a directory's rules are its *.rhai files)".into());
    }
    let incoming = RuleSet::compile(diff.clone(), limits).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        format!(
            "{} rule error(s) in --diff:\n  {}",
            list.len(),
            list.join("\n  ")
        )
    })?;
    let mut incoming: Vec<(String, RuleSource)> = diff
        .into_iter()
        .map(|source| (names_of(&incoming, &source), source))
        .collect();
    let first_names: Vec<String> = first_sources
        .iter()
        .map(|source| names_of(first, source))
        .collect();

    let mut problems = Vec::new();
    let known: HashSet<&str> = first_names.iter().map(String::as_str).collect();
    for name in without {
        if !known.contains(name.as_str()) {
            problems.push(format!(
                "--without {name}: a has no rule `{name}` (its rules: {})",
                first_names.join(", ")
            ));
        }
        if incoming.iter().any(|(n, _)| n == name) {
            problems.push(format!(
                "--without {name}: `{name}` is also a rule of --diff; leave it out or replace it"
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }

    let mut changes = Changes::default();
    let mut sources = Vec::with_capacity(first_sources.len() + incoming.len());
    for (name, source) in first_names.into_iter().zip(first_sources) {
        if let Some(at) = incoming.iter().position(|(n, _)| *n == name) {
            let (name, replacement) = incoming.remove(at);
            changes.replaced.push((name, replacement.path.clone()));
            sources.push(replacement);
        } else if without.contains(&name) {
            changes.left_out.push(name);
        } else {
            sources.push(source);
        }
    }
    for (name, source) in incoming {
        changes.added.push((name, source.path.clone()));
        sources.push(source);
    }
    let second = RuleSet::compile(sources, limits).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        format!(
            "{} rule error(s) in b:\n  {}",
            list.len(),
            list.join("\n  ")
        )
    })?;
    Ok((second, changes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(name: &str, text: &str) -> RuleSource {
        RuleSource {
            name: name.to_string(),
            path: PathBuf::from(format!("{name}.rhai")),
            source: text.to_string(),
        }
    }

    fn names(set: &RuleSet) -> Vec<&str> {
        set.rules().iter().map(|r| r.name.as_str()).collect()
    }

    fn first() -> (RuleSet, Vec<RuleSource>) {
        let sources = vec![
            source("handoff", r#"notify("ops", "a");"#),
            source("digest", r#"notify("ops", "b");"#),
            source("gate", r#"notify("ops", "c");"#),
        ];
        let set = RuleSet::compile(sources.clone(), &RuleLimits::default()).unwrap();
        (set, sources)
    }

    #[test]
    fn an_edited_rule_takes_its_namesakes_place_and_the_others_stay() {
        let (set, sources) = first();
        let mut edited = source("digest", r#"notify("ops", "edited");"#);
        edited.path = PathBuf::from("edits/digest.rhai");
        let (second, changes) = compile(
            &set,
            sources,
            vec![edited, source("weekly", "")],
            &["gate".to_string()],
            &RuleLimits::default(),
        )
        .unwrap();
        assert_eq!(names(&second), ["handoff", "digest", "weekly"]);
        assert_eq!(
            second.rules()[1].path,
            PathBuf::from("edits/digest.rhai"),
            "the edit runs, not the original"
        );
        assert_eq!(
            changes.line(),
            "b is a with digest from edits/digest.rhai, weekly added from weekly.rhai, gate left out"
        );
    }

    #[test]
    fn a_header_name_is_what_a_rule_is_matched_by() {
        let (set, sources) = first();
        let renamed = RuleSource {
            name: "digest-v2".to_string(),
            path: PathBuf::from("digest-v2.rhai"),
            source: "//! name: digest\nnotify(\"ops\", \"v2\");".to_string(),
        };
        let (second, changes) =
            compile(&set, sources, vec![renamed], &[], &RuleLimits::default()).unwrap();
        assert_eq!(names(&second), ["handoff", "digest", "gate"]);
        assert_eq!(
            changes.replaced,
            [("digest".to_string(), PathBuf::from("digest-v2.rhai"))]
        );
    }

    #[test]
    fn leaving_out_an_unknown_or_replaced_rule_is_refused_with_every_reason() {
        let (set, sources) = first();
        let err = compile(
            &set,
            sources,
            vec![source("gate", "")],
            &["gate".to_string(), "weekly".to_string()],
            &RuleLimits::default(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "--without gate: `gate` is also a rule of --diff; leave it out or replace it\n\
             --without weekly: a has no rule `weekly` (its rules: handoff, digest, gate)"
        );
    }
}
