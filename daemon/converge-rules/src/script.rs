//! A rule's script as Rhai compiles it, read instead of run: the calls it
//! makes and what its `switch`es compare, for the lints of `converge rules
//! check`. Reading the compiled AST rather than the text means comments and
//! strings are what Rhai says they are, a call inside the `${..}` of a
//! backtick string or in a function the rule defines is seen, method-call
//! syntax is a call, and what the optimizer folds (a `const`, `"a" + "b"`,
//! `if false { .. }`) is folded here too.

use std::collections::BTreeSet;

use rhai::{AST, ASTNode, Engine, Expr, FnCallExpr, Position, Stmt, Token};

use crate::{CompileError, RuleLimits, RuleSource};

/// One rule's script, compiled as [`crate::RuleSet::compile`] compiles it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// In source order.
    calls: Vec<Call>,
    /// In source order.
    switches: Vec<Switch>,
}

/// A call the script makes of a function it does not define: one converge
/// or Rhai provides. Operators are calls too: `a == b` calls `==`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub name: String,
    /// The object of a method call comes first: `"ana".notify(m)` is
    /// `notify("ana", m)`, as Rhai calls it.
    pub arguments: Vec<Argument>,
    /// Of the function's name (of the operator); 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
}

/// What a call's argument is, as far as a lint can tell without running it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Argument {
    /// A string known when the rule compiles: a literal, a backtick string
    /// without `${..}`, or what the optimizer made one (a `const`, `"a" + "b"`).
    Text(String),
    /// A variable, or properties read from one: `event.type` is
    /// `["event", "type"]`.
    Path(Vec<String>),
    /// Anything else: a string built at run time, a number, a map, a call.
    Other,
}

/// A `switch` on a variable or properties of one (`switch event.type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    /// Always an [`Argument::Path`].
    pub subject: Argument,
    /// The case values that are strings, in source order.
    pub labels: Vec<String>,
}

impl Script {
    /// Compiles the script of a rule, with the rules' engine and `limits`.
    /// The header is not read: [`crate::RuleSet::compile`] reports its
    /// errors.
    pub fn compile(source: &RuleSource, limits: &RuleLimits) -> Result<Script, CompileError> {
        let engine = crate::engine::build(limits);
        let ast = engine
            .compile_with_scope(&crate::declared_inputs(), &source.source)
            .map_err(|err| crate::script_error(source.name.clone(), source.path.clone(), &err))?;
        let (calls, switch_sites) = walk(&ast);
        let switches = switch_sites
            .into_iter()
            .map(|(subject, at)| Switch {
                subject,
                labels: switch_labels(&engine, &source.source, at),
            })
            .collect();
        Ok(Script { calls, switches })
    }

    /// Every call, in source order.
    pub fn calls(&self) -> &[Call] {
        &self.calls
    }

    /// Every `switch` on a variable or its properties, in source order.
    pub fn switches(&self) -> &[Switch] {
        &self.switches
    }
}

impl Call {
    /// The `n`th (0-based) argument, when it is a string known when the rule
    /// compiles.
    pub fn text(&self, n: usize) -> Option<&str> {
        match self.arguments.get(n) {
            Some(Argument::Text(text)) => Some(text),
            _ => None,
        }
    }
}

impl Argument {
    /// Whether the argument reads exactly `path`, e.g. `["event", "type"]`.
    pub fn is_path(&self, path: &[&str]) -> bool {
        matches!(self, Argument::Path(parts) if parts.iter().eq(path))
    }
}

/// The calls of functions the script does not define, and the `switch`es on
/// a path with the position of their keyword, each in source order.
/// Whether a compiled script calls the function `name` (one converge or
/// Rhai provides, not one of its own), in any form a call takes.
pub(crate) fn calls(ast: &AST, name: &str) -> bool {
    walk(ast).0.iter().any(|call| call.name == name)
}

fn walk(ast: &AST) -> (Vec<Call>, Vec<(Argument, Position)>) {
    let own: BTreeSet<(&str, usize)> = ast
        .iter_functions()
        .map(|f| (f.name, f.params.len()))
        .collect();
    // A script function called as a method binds the object to `this`:
    // its parameters are the other arguments, in both forms.
    let is_own = |call: &FnCallExpr| own.contains(&(call.name.as_str(), call.args.len()));
    let mut calls = Vec::new();
    let mut switches = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        match path.last() {
            Some(ASTNode::Stmt(Stmt::FnCall(call, at)) | ASTNode::Expr(Expr::FnCall(call, at)))
                if !is_own(call) =>
            {
                calls.push(read_call(call, None, *at));
            }
            Some(ASTNode::Expr(Expr::MethodCall(call, at))) if !is_own(call) => {
                calls.push(read_call(call, Some(method_object(path)), *at));
            }
            Some(ASTNode::Stmt(Stmt::Switch(switch, at))) => {
                let subject = argument(&switch.0);
                if matches!(subject, Argument::Path(_)) {
                    switches.push((subject, *at));
                }
            }
            _ => {}
        }
        true
    });
    // The walk visits a case listed under several values once per value,
    // and functions after the top level.
    calls.sort_by_key(|call| (call.line, call.column));
    calls.dedup();
    switches.sort_by_key(|(_, at)| crate::line_column(*at));
    switches.dedup_by_key(|(_, at)| *at);
    (calls, switches)
}

fn read_call(call: &FnCallExpr, object: Option<Argument>, at: Position) -> Call {
    let (line, column) = crate::line_column(at);
    Call {
        name: call.name.to_string(),
        arguments: object
            .into_iter()
            .chain(call.args.iter().map(argument))
            .collect(),
        line,
        column,
    }
}

fn argument(expr: &Expr) -> Argument {
    match expr {
        Expr::StringConstant(text, _) => Argument::Text(text.to_string()),
        Expr::DynamicConstant(value, _) if value.is_string() => value
            .clone()
            .into_string()
            .map_or(Argument::Other, Argument::Text),
        _ => path(expr).map_or(Argument::Other, Argument::Path),
    }
}

/// `event.type` is `Dot(Variable(event), Property(type))`, and `a.b.c` is
/// `Dot(a, Dot(b, c))`.
fn path(expr: &Expr) -> Option<Vec<String>> {
    match expr {
        Expr::Variable(variable, ..) => Some(vec![variable.1.to_string()]),
        Expr::Property(property, _) => Some(vec![property.2.to_string()]),
        Expr::Dot(dot, ..) => {
            let mut parts = path(&dot.lhs)?;
            parts.extend(path(&dot.rhs)?);
            Some(parts)
        }
        _ => None,
    }
}

/// The object of the method call that ends `path`: the left side of the
/// `Dot` above it. In a chain (`a.b.notify(..)`, `Dot(a, Dot(b, call))`)
/// the object is more than one left side, which a lint cannot use.
fn method_object(path: &[ASTNode]) -> Argument {
    let mut lefts = Vec::new();
    let mut child = path.last();
    for node in path.iter().rev().skip(1) {
        match (node, child) {
            (ASTNode::Expr(Expr::Dot(dot, ..)), Some(ASTNode::Expr(inner)))
                if std::ptr::eq(&dot.rhs, *inner) =>
            {
                lefts.push(&dot.lhs);
            }
            _ => break,
        }
        child = Some(node);
    }
    match lefts.as_slice() {
        [object] => argument(object),
        _ => Argument::Other,
    }
}

/// The string case labels of the `switch` whose keyword is `at`. The AST
/// keeps a switch's case values only as hashes, so they are read from
/// Rhai's own tokens of the switch's block: a string at the block's top
/// level followed by `=>`, `|` or `if` is a case label. Called only for a
/// subject that is a path, so the first `{` opens the block.
fn switch_labels(engine: &Engine, source: &str, at: Position) -> Vec<String> {
    let Some(offset) = byte_offset(source, at) else {
        return Vec::new();
    };
    let inputs = [&source[offset..]];
    let (tokens, control) = engine.lex(&inputs);
    let mut tokens = tokens.map(|(token, _)| token);
    // The tokenizer repeats its end for ever: every loop stops there.
    let ends = |t: &Token| matches!(t, Token::EOF | Token::LexError(_));
    if tokens.next() != Some(Token::Switch)
        || tokens.find(|t| *t == Token::LeftBrace || ends(t)) != Some(Token::LeftBrace)
    {
        return Vec::new();
    }
    // For each bracket open, whether it opened a `${..}`.
    let mut open = vec![false];
    let mut labels = Vec::new();
    let mut previous = Token::LeftBrace;
    for token in tokens {
        let in_cases = open.len() == 1;
        match &token {
            Token::LeftBrace => open.push(matches!(previous, Token::InterpolatedString(_))),
            Token::MapStart | Token::LeftParen | Token::LeftBracket => open.push(false),
            Token::RightBrace | Token::RightParen | Token::RightBracket => {
                if open.pop() == Some(true) {
                    // What Rhai's parser tells its tokenizer: the backtick
                    // string goes on after its `${..}`.
                    control.borrow_mut().is_within_text = true;
                }
                if open.is_empty() {
                    break;
                }
            }
            Token::DoubleArrow | Token::Pipe | Token::If if in_cases => {
                if let Token::StringConstant(label) = &previous {
                    labels.push(label.to_string());
                }
            }
            _ if ends(&token) => break,
            _ => {}
        }
        previous = token;
    }
    labels
}

/// Where a Rhai position (1-based line, and column in characters) is in
/// `source`, in bytes.
fn byte_offset(source: &str, at: Position) -> Option<usize> {
    let (line, column) = (at.line()?, at.position()?);
    let start: usize = source
        .split_inclusive('\n')
        .take(line.checked_sub(1)?)
        .map(str::len)
        .sum();
    source
        .get(start..)?
        .char_indices()
        .nth(column.checked_sub(1)?)
        .map(|(i, _)| start + i)
}
