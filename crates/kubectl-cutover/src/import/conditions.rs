//! Argo Rollouts' `successCondition`/`failureCondition`, written in the expr language
//! (`result[0] >= 0.95`, `len(result) == 0 || ...`, `all(result, # < 1)`), rewritten into
//! Cutover's: CEL over `result` (see `cutover_core::analysis::condition`).
//!
//! The rewrite is exact for every value Cutover judges, or it fails with the reason:
//!
//! - Operators and literals map one to one (`and` → `&&`, `not` → `!`, `len` → `size`,
//!   `asFloat` → `double`, `x matches y` → `x.matches(y)`, `all(a, # > 1)` →
//!   `a.all(x, x > 1)`). CEL keeps `int` and `double` apart where expr mixes them, so an
//!   integer literal next to a number that is a `double` in Cutover (every measured number
//!   is) is written as a double: `result * 100 < 1` → `result * 100.0 < 1`,
//!   `result == 0` → `result == 0.0`.
//! - Prometheus: Argo gives a vector as a list, so conditions read `result[0]`. Cutover gives
//!   a one-series answer as a number and several series as a list, so `result[0]` becomes
//!   `result` (a query answering with several series is then an error in Cutover, where Argo
//!   took whichever series came first), `all(result, # < k)` becomes `max(result) < k`
//!   (true for a number and a list alike), and other indices or functions over the vector
//!   cannot be carried over.
//! - Missing data: Cutover judges an empty answer, `NaN`, an empty string or `null`
//!   Inconclusive before any condition runs. A test for them (`isNaN(result)`,
//!   `len(result) == 0`, `result == ""`, `default(result, 0)`) is replaced by its value for
//!   data that is present (`false`, `false`, `false`, `result`) and the boolean algebra is
//!   simplified; the rewrite is then exact for every value Cutover evaluates, but what the
//!   author decided for missing data is lost, so [`Rewritten::missing_data`] says so and the
//!   caller reports it.

/// What `result` holds, which decides how reading into it carries over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultShape {
    /// A Prometheus answer (Argo: a list for a vector; Cutover: a number for one series).
    Prometheus,
    /// A JSON value (the web provider) or a plain text body: the same in both.
    Json,
}

/// A condition in Cutover's language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// The CEL expression.
    pub cel: String,
    /// The tests for missing data that were replaced by their value for present data
    /// (e.g. `isNaN`), when there were any: the caller reports them.
    pub missing_data: Option<String>,
}

/// Rewrites the expr condition `source` into CEL, or says why it cannot be.
pub fn rewrite(source: &str, shape: ResultShape) -> Result<Rewritten, String> {
    let tokens = lex(source)?;
    let mut parser = Parser { tokens, at: 0 };
    let parsed = parser.expression()?;
    if let Some(token) = parser.tokens.get(parser.at) {
        return Err(format!(
            "unexpected {} after a complete expression",
            token.show()
        ));
    }
    let mut tests = Vec::new();
    let folded = fold(parsed, &mut tests);
    let emitter = Emitter {
        shape,
        vars: Vec::new(),
    };
    let out = emitter.emit(&folded)?;
    // Parse what was written, with each placeholder standing for a number, so a mistake
    // here shows as a report rather than as a release that errors.
    let check = replace_placeholders(&out.text);
    if let Err(e) = cel::Program::compile(&check) {
        return Err(format!("the rewrite `{}` is not valid CEL ({e})", out.text));
    }
    tests.dedup();
    Ok(Rewritten {
        cel: out.text,
        missing_data: (!tests.is_empty()).then(|| tests.join(", ")),
    })
}

/// Whether `source` reads into `result` as structured data (fields, indices, lists,
/// booleans): a web answer then has to be read as JSON. `false` when it cannot be parsed.
pub fn reads_structure(source: &str) -> bool {
    fn walk(e: &Expr) -> bool {
        match e {
            Expr::Member(x, _) | Expr::Index(x, _) if **x == Expr::Result => true,
            Expr::Binary(_, a, b)
                if matches!(
                    (&**a, &**b),
                    (Expr::Result, Expr::Bool(_) | Expr::Nil)
                        | (Expr::Bool(_) | Expr::Nil, Expr::Result)
                ) =>
            {
                true
            }
            Expr::Call(name, args)
                if args.first() == Some(&Expr::Result)
                    && matches!(
                        name.as_str(),
                        "all" | "any" | "none" | "one" | "filter" | "map" | "count" | "len"
                    ) =>
            {
                true
            }
            Expr::Member(x, _) | Expr::Closure(x) | Expr::Not(x) | Expr::Neg(x) => walk(x),
            Expr::Index(a, b) | Expr::Binary(_, a, b) => walk(a) || walk(b),
            Expr::Call(_, items) | Expr::List(items) => items.iter().any(walk),
            Expr::Cond(a, b, c) => walk(a) || walk(b) || walk(c),
            _ => false,
        }
    }
    let Ok(tokens) = lex(source) else {
        return false;
    };
    let mut parser = Parser { tokens, at: 0 };
    parser.expression().is_ok_and(|e| walk(&e))
}

fn replace_placeholders(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        match rest[start..].find("}}") {
            Some(end) => {
                out.push_str("0.0");
                rest = &rest[start + end + 2..];
            }
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------
// Lexing

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A number as written, without `_` separators.
    Num(String),
    /// A string literal's content.
    Str(String),
    Ident(String),
    /// `{{args.NAME}}`, written in Cutover's spelling.
    Placeholder(String),
    Punct(&'static str),
}

impl Tok {
    fn show(&self) -> String {
        match self {
            Tok::Num(n) => format!("number {n}"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Ident(i) => format!("`{i}`"),
            Tok::Placeholder(p) => format!("`{p}`"),
            Tok::Punct(p) => format!("`{p}`"),
        }
    }
}

const PUNCTS: &[&str] = &[
    "**", "&&", "||", "==", "!=", "<=", ">=", "?.", "??", "..", "(", ")", "[", "]", "{", "}", ",",
    ".", "!", "<", ">", "+", "-", "*", "/", "%", "?", ":", "#", "|", "^",
];

fn lex(source: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '{' && chars.get(i + 1) == Some(&'{') {
            let rest: String = chars[i + 2..].iter().collect();
            let Some(end) = rest.find("}}") else {
                return Err("a `{{` placeholder is not closed".to_owned());
            };
            let inner = rest[..end].trim();
            let Some(name) = inner.strip_prefix("args.").filter(|n| !n.is_empty()) else {
                return Err(format!(
                    "placeholder `{{{{{inner}}}}}`: only `{{{{args.NAME}}}}` carries over"
                ));
            };
            out.push(Tok::Placeholder(format!("{{{{args.{name}}}}}")));
            i += 2 + rest[..end].chars().count() + 2;
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            let start = i;
            if c == '0' && matches!(chars.get(i + 1), Some('x' | 'X')) {
                i += 2;
                while i < chars.len() && (chars[i].is_ascii_hexdigit() || chars[i] == '_') {
                    i += 1;
                }
            } else {
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '_') {
                    i += 1;
                }
                // A fraction, but not the range operator `..`.
                if chars.get(i) == Some(&'.') && chars.get(i + 1) != Some(&'.') {
                    i += 1;
                    while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '_') {
                        i += 1;
                    }
                }
                if matches!(chars.get(i), Some('e' | 'E')) {
                    let mut j = i + 1;
                    if matches!(chars.get(j), Some('+' | '-')) {
                        j += 1;
                    }
                    if chars.get(j).is_some_and(char::is_ascii_digit) {
                        i = j;
                        while i < chars.len() && chars[i].is_ascii_digit() {
                            i += 1;
                        }
                    }
                }
            }
            let text: String = chars[start..i].iter().filter(|c| **c != '_').collect();
            out.push(Tok::Num(text));
            continue;
        }
        if c == '"' || c == '\'' || c == '`' {
            let (text, next) = string(&chars, i)?;
            out.push(Tok::Str(text));
            i = next;
            continue;
        }
        if c.is_alphabetic() || c == '_' || c == '$' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
            continue;
        }
        let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
        let Some(p) = PUNCTS.iter().find(|p| rest.starts_with(**p)) else {
            return Err(format!("unexpected character {c:?}"));
        };
        out.push(Tok::Punct(p));
        i += p.chars().count();
    }
    Ok(out)
}

/// A string literal starting at `chars[start]` (its quote); its content and the index after it.
fn string(chars: &[char], start: usize) -> Result<(String, usize), String> {
    let quote = chars[start];
    let mut text = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        let c = chars[i];
        if c == quote {
            return Ok((text, i + 1));
        }
        if c == '\\' && quote != '`' {
            let Some(&escaped) = chars.get(i + 1) else {
                break;
            };
            i += 2;
            match escaped {
                'n' => text.push('\n'),
                't' => text.push('\t'),
                'r' => text.push('\r'),
                '\\' | '\'' | '"' => text.push(escaped),
                'u' => {
                    let hex: String = chars.iter().skip(i).take(4).collect();
                    let code = u32::from_str_radix(&hex, 16)
                        .ok()
                        .and_then(char::from_u32)
                        .ok_or_else(|| format!("invalid escape \\u{hex}"))?;
                    text.push(code);
                    i += 4;
                }
                other => return Err(format!("unsupported escape \\{other} in a string")),
            }
            continue;
        }
        text.push(c);
        i += 1;
    }
    Err("a string literal is not closed".to_owned())
}

// ---------------------------------------------------------------------------------------
// Parsing

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
    Matches,
    Contains,
    StartsWith,
    EndsWith,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Range,
    Coalesce,
}

impl Op {
    /// Binding power: higher binds tighter.
    fn power(self) -> u8 {
        match self {
            Op::Or => 2,
            Op::And => 3,
            Op::Eq
            | Op::Ne
            | Op::Lt
            | Op::Le
            | Op::Gt
            | Op::Ge
            | Op::In
            | Op::NotIn
            | Op::Matches
            | Op::Contains
            | Op::StartsWith
            | Op::EndsWith => 4,
            Op::Range => 5,
            Op::Add | Op::Sub => 6,
            Op::Mul | Op::Div | Op::Mod => 7,
            Op::Pow => 8,
            // expr binds `??` tighter than any other binary operator.
            Op::Coalesce => 9,
        }
    }

    fn is_comparison(self) -> bool {
        matches!(self, Op::Eq | Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge)
    }

    fn is_arithmetic(self) -> bool {
        matches!(self, Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Mod)
    }

    fn cel(self) -> &'static str {
        match self {
            Op::Or => "||",
            Op::And => "&&",
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::In | Op::NotIn => "in",
            Op::Add => "+",
            Op::Sub => "-",
            Op::Mul => "*",
            Op::Div => "/",
            Op::Mod => "%",
            Op::Matches => "matches",
            Op::Contains => "contains",
            Op::StartsWith => "startsWith",
            Op::EndsWith => "endsWith",
            Op::Pow => "**",
            Op::Range => "..",
            Op::Coalesce => "??",
        }
    }

    /// The comparison with its operands swapped (`k < x` is `x > k`).
    fn flipped(self) -> Op {
        match self {
            Op::Lt => Op::Gt,
            Op::Le => Op::Ge,
            Op::Gt => Op::Lt,
            Op::Ge => Op::Le,
            other => other,
        }
    }

    fn holds(self, a: i64, b: i64) -> bool {
        match self {
            Op::Eq => a == b,
            Op::Ne => a != b,
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
    Nil,
    /// `result`.
    Result,
    /// `#`, the element in a predicate.
    Pointer,
    Placeholder(String),
    Member(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
    Call(String, Vec<Expr>),
    /// `{ ... }`, a predicate.
    Closure(Box<Expr>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Binary(Op, Box<Expr>, Box<Expr>),
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
    List(Vec<Expr>),
}

struct Parser {
    tokens: Vec<Tok>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.at)
    }

    fn peek_at(&self, offset: usize) -> Option<&Tok> {
        self.tokens.get(self.at + offset)
    }

    fn eat(&mut self, punct: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Punct(p)) if *p == punct) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, punct: &str) -> Result<(), String> {
        if self.eat(punct) {
            return Ok(());
        }
        Err(match self.peek() {
            Some(t) => format!("expected `{punct}`, found {}", t.show()),
            None => format!("expected `{punct}` at the end"),
        })
    }

    fn expression(&mut self) -> Result<Expr, String> {
        let condition = self.binary(0)?;
        if self.eat("?") {
            let then = self.expression()?;
            self.expect(":")?;
            let otherwise = self.expression()?;
            return Ok(Expr::Cond(
                Box::new(condition),
                Box::new(then),
                Box::new(otherwise),
            ));
        }
        Ok(condition)
    }

    /// The binary operator at the cursor and how many tokens it takes.
    fn operator(&self) -> Option<(Op, usize)> {
        let op = match self.peek()? {
            Tok::Punct(p) => match *p {
                "||" => Op::Or,
                "&&" => Op::And,
                "==" => Op::Eq,
                "!=" => Op::Ne,
                "<" => Op::Lt,
                "<=" => Op::Le,
                ">" => Op::Gt,
                ">=" => Op::Ge,
                "+" => Op::Add,
                "-" => Op::Sub,
                "*" => Op::Mul,
                "/" => Op::Div,
                "%" => Op::Mod,
                "**" | "^" => Op::Pow,
                ".." => Op::Range,
                "??" => Op::Coalesce,
                _ => return None,
            },
            Tok::Ident(word) => match word.as_str() {
                "or" => Op::Or,
                "and" => Op::And,
                "in" => Op::In,
                "matches" => Op::Matches,
                "contains" => Op::Contains,
                "startsWith" => Op::StartsWith,
                "endsWith" => Op::EndsWith,
                "not" if matches!(self.peek_at(1), Some(Tok::Ident(w)) if w == "in") => {
                    return Some((Op::NotIn, 2));
                }
                _ => return None,
            },
            _ => return None,
        };
        Some((op, 1))
    }

    fn binary(&mut self, min_power: u8) -> Result<Expr, String> {
        let mut left = self.unary()?;
        while let Some((op, width)) = self.operator() {
            let power = op.power();
            if power < min_power {
                break;
            }
            self.at += width;
            // `**` is right-associative, everything else left-associative.
            let next = if op == Op::Pow { power } else { power + 1 };
            let right = self.binary(next)?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if matches!(self.peek(), Some(Tok::Ident(w)) if w == "not") {
            self.at += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat("-") {
            return Ok(match self.unary()? {
                Expr::Int(k) => Expr::Int(-k),
                Expr::Float(f) => Expr::Float(-f),
                other => Expr::Neg(Box::new(other)),
            });
        }
        if self.eat("+") {
            return self.unary();
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<Expr, String> {
        let mut e = self.primary()?;
        loop {
            if self.eat(".") {
                let Some(Tok::Ident(name)) = self.peek().cloned() else {
                    return Err("expected a field name after `.`".to_owned());
                };
                self.at += 1;
                if matches!(self.peek(), Some(Tok::Punct("("))) {
                    return Err(format!("method call `.{name}(...)` has no counterpart"));
                }
                e = Expr::Member(Box::new(e), name);
            } else if self.eat("[") {
                let index = self.expression()?;
                if matches!(self.peek(), Some(Tok::Punct(":"))) {
                    return Err("slices (`[a:b]`) have no counterpart".to_owned());
                }
                self.expect("]")?;
                e = Expr::Index(Box::new(e), Box::new(index));
            } else if matches!(self.peek(), Some(Tok::Punct("?."))) {
                return Err("optional chaining (`?.`) has no counterpart".to_owned());
            } else if matches!(self.peek(), Some(Tok::Punct("|"))) {
                return Err("pipes (`|`) have no counterpart".to_owned());
            } else {
                return Ok(e);
            }
        }
    }

    fn primary(&mut self) -> Result<Expr, String> {
        let Some(token) = self.peek().cloned() else {
            return Err("the expression ends too early".to_owned());
        };
        self.at += 1;
        match token {
            Tok::Num(text) => number(&text),
            Tok::Str(s) => Ok(Expr::Str(s)),
            Tok::Placeholder(p) => Ok(Expr::Placeholder(p)),
            Tok::Punct("#") => Ok(Expr::Pointer),
            Tok::Punct(".") => {
                // `.field` inside a predicate is `#.field`.
                let Some(Tok::Ident(name)) = self.peek().cloned() else {
                    return Err("expected a field name after `.`".to_owned());
                };
                self.at += 1;
                Ok(Expr::Member(Box::new(Expr::Pointer), name))
            }
            Tok::Punct("(") => {
                let inner = self.expression()?;
                self.expect(")")?;
                Ok(inner)
            }
            Tok::Punct("[") => {
                let mut items = Vec::new();
                if !self.eat("]") {
                    loop {
                        items.push(self.expression()?);
                        if self.eat("]") {
                            break;
                        }
                        self.expect(",")?;
                    }
                }
                Ok(Expr::List(items))
            }
            Tok::Punct("{") => {
                let inner = self.expression()?;
                if matches!(self.peek(), Some(Tok::Punct(":"))) {
                    return Err("map literals have no counterpart".to_owned());
                }
                self.expect("}")?;
                Ok(Expr::Closure(Box::new(inner)))
            }
            Tok::Ident(name) => {
                if self.eat("(") {
                    let mut args = Vec::new();
                    if !self.eat(")") {
                        loop {
                            args.push(self.expression()?);
                            if self.eat(")") {
                                break;
                            }
                            self.expect(",")?;
                        }
                    }
                    return Ok(Expr::Call(name, args));
                }
                match name.as_str() {
                    "result" => Ok(Expr::Result),
                    "true" => Ok(Expr::Bool(true)),
                    "false" => Ok(Expr::Bool(false)),
                    "nil" => Ok(Expr::Nil),
                    other => Err(format!(
                        "unknown name `{other}` (a condition sees only `result`)"
                    )),
                }
            }
            other => Err(format!("unexpected {}", other.show())),
        }
    }
}

fn number(text: &str) -> Result<Expr, String> {
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        return i64::from_str_radix(hex, 16)
            .map(Expr::Int)
            .map_err(|e| format!("number {text}: {e}"));
    }
    if !text.contains(['.', 'e', 'E'])
        && let Ok(k) = text.parse::<i64>()
    {
        return Ok(Expr::Int(k));
    }
    text.parse::<f64>()
        .map(Expr::Float)
        .map_err(|e| format!("number {text}: {e}"))
}

// ---------------------------------------------------------------------------------------
// Missing-data tests

/// Replaces tests for missing data by their value for present data (recording which were
/// replaced in `tests`), then simplifies the boolean algebra around them.
fn fold(e: Expr, tests: &mut Vec<String>) -> Expr {
    let e = match e {
        Expr::Member(x, f) => Expr::Member(Box::new(fold(*x, tests)), f),
        Expr::Index(x, i) => Expr::Index(Box::new(fold(*x, tests)), Box::new(fold(*i, tests))),
        Expr::Call(name, args) => {
            Expr::Call(name, args.into_iter().map(|a| fold(a, tests)).collect())
        }
        Expr::Closure(x) => Expr::Closure(Box::new(fold(*x, tests))),
        Expr::Not(x) => Expr::Not(Box::new(fold(*x, tests))),
        Expr::Neg(x) => Expr::Neg(Box::new(fold(*x, tests))),
        Expr::Binary(op, a, b) => {
            Expr::Binary(op, Box::new(fold(*a, tests)), Box::new(fold(*b, tests)))
        }
        Expr::Cond(c, t, f) => Expr::Cond(
            Box::new(fold(*c, tests)),
            Box::new(fold(*t, tests)),
            Box::new(fold(*f, tests)),
        ),
        Expr::List(items) => Expr::List(items.into_iter().map(|a| fold(a, tests)).collect()),
        leaf => leaf,
    };
    match e {
        Expr::Call(name, args) if name == "isNaN" && args.len() == 1 => {
            tests.push("isNaN".to_owned());
            Expr::Bool(false)
        }
        Expr::Call(name, mut args) if name == "default" && args.len() == 2 => {
            tests.push("default".to_owned());
            args.swap_remove(0)
        }
        Expr::Binary(Op::Coalesce, a, _) => {
            tests.push("??".to_owned());
            *a
        }
        Expr::Binary(op, a, b) if op.is_comparison() => {
            let emptiness = match (&*a, &*b) {
                (Expr::Call(f, args), Expr::Int(k)) if f == "len" && is_result(args) => {
                    length_test(op, *k)
                }
                (Expr::Int(k), Expr::Call(f, args)) if f == "len" && is_result(args) => {
                    length_test(op.flipped(), *k)
                }
                (Expr::Result, Expr::Str(s)) | (Expr::Str(s), Expr::Result)
                    if s.is_empty() && matches!(op, Op::Eq | Op::Ne) =>
                {
                    Some(op == Op::Ne)
                }
                (Expr::Result, Expr::Nil) | (Expr::Nil, Expr::Result)
                    if matches!(op, Op::Eq | Op::Ne) =>
                {
                    Some(op == Op::Ne)
                }
                _ => None,
            };
            match emptiness {
                Some(value) => {
                    tests.push(match (&*a, &*b) {
                        (Expr::Nil, _) | (_, Expr::Nil) => "a test for nil".to_owned(),
                        (Expr::Str(_), _) | (_, Expr::Str(_)) => {
                            "a test for an empty string".to_owned()
                        }
                        _ => "a test of len(result)".to_owned(),
                    });
                    Expr::Bool(value)
                }
                None => Expr::Binary(op, a, b),
            }
        }
        Expr::Not(x) => match *x {
            Expr::Bool(v) => Expr::Bool(!v),
            other => Expr::Not(Box::new(other)),
        },
        Expr::Binary(Op::And, a, b) => match (*a, *b) {
            (Expr::Bool(false), _) | (_, Expr::Bool(false)) => Expr::Bool(false),
            (Expr::Bool(true), other) | (other, Expr::Bool(true)) => other,
            (a, b) => Expr::Binary(Op::And, Box::new(a), Box::new(b)),
        },
        Expr::Binary(Op::Or, a, b) => match (*a, *b) {
            (Expr::Bool(true), _) | (_, Expr::Bool(true)) => Expr::Bool(true),
            (Expr::Bool(false), other) | (other, Expr::Bool(false)) => other,
            (a, b) => Expr::Binary(Op::Or, Box::new(a), Box::new(b)),
        },
        Expr::Cond(c, t, f) => match *c {
            Expr::Bool(true) => *t,
            Expr::Bool(false) => *f,
            other => Expr::Cond(Box::new(other), t, f),
        },
        other => other,
    }
}

fn is_result(args: &[Expr]) -> bool {
    matches!(args, [Expr::Result])
}

/// The value of `len(result) <op> k` for every present (non-empty) result, when it is the
/// same for all of them.
fn length_test(op: Op, k: i64) -> Option<bool> {
    let samples = [1, k, k.saturating_add(1), i64::MAX];
    let mut values = samples
        .into_iter()
        .filter(|n| *n >= 1)
        .map(|n| op.holds(n, k));
    let first = values.next()?;
    values.all(|v| v == first).then_some(first)
}

// ---------------------------------------------------------------------------------------
// Writing CEL

/// What CEL knows of a value's type, as far as the rewrite needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Int,
    /// A measured number (always a `double` in Cutover) or a double literal.
    Double,
    Bool,
    Str,
    List,
    /// Anything (a JSON value, a placeholder).
    Dyn,
}

/// Precedence levels of CEL's grammar.
const COND: u8 = 1;
const OR: u8 = 2;
const AND: u8 = 3;
const REL: u8 = 4;
const ADD: u8 = 5;
const MUL: u8 = 6;
const UNARY: u8 = 7;
const PRIMARY: u8 = 8;

#[derive(Debug, Clone)]
struct Out {
    text: String,
    prec: u8,
    ty: Ty,
}

impl Out {
    fn new(text: impl Into<String>, prec: u8, ty: Ty) -> Out {
        Out {
            text: text.into(),
            prec,
            ty,
        }
    }

    /// The text, in parentheses when it binds looser than `prec`.
    fn at(&self, prec: u8) -> String {
        if self.prec < prec {
            format!("({})", self.text)
        } else {
            self.text.clone()
        }
    }
}

struct Emitter {
    shape: ResultShape,
    /// The predicate variables in scope, innermost last.
    vars: Vec<String>,
}

fn double_literal(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

fn string_literal(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether `name` can follow a `.` in CEL (else it is written as `["name"]`).
fn is_cel_field(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !crate::lint::is_cel_reserved(name)
}

impl Emitter {
    fn emit(&self, e: &Expr) -> Result<Out, String> {
        Ok(match e {
            Expr::Int(k) => Out::new(k.to_string(), if *k < 0 { UNARY } else { PRIMARY }, Ty::Int),
            Expr::Float(f) => Out::new(
                double_literal(*f),
                if *f < 0.0 { UNARY } else { PRIMARY },
                Ty::Double,
            ),
            Expr::Str(s) => Out::new(string_literal(s), PRIMARY, Ty::Str),
            Expr::Bool(b) => Out::new(b.to_string(), PRIMARY, Ty::Bool),
            Expr::Nil => Out::new("null", PRIMARY, Ty::Dyn),
            Expr::Placeholder(p) => Out::new(p.clone(), PRIMARY, Ty::Dyn),
            Expr::Result => Out::new(
                "result",
                PRIMARY,
                match self.shape {
                    ResultShape::Prometheus => Ty::Double,
                    ResultShape::Json => Ty::Dyn,
                },
            ),
            Expr::Pointer => match self.vars.last() {
                Some(v) => Out::new(
                    v.clone(),
                    PRIMARY,
                    if self.shape == ResultShape::Prometheus && self.vars.len() == 1 {
                        Ty::Double
                    } else {
                        Ty::Dyn
                    },
                ),
                None => return Err("`#` outside a predicate".to_owned()),
            },
            Expr::Member(x, field) => {
                if **x == Expr::Result && self.shape == ResultShape::Prometheus {
                    return Err(format!("result.{field}: a Prometheus answer has no fields"));
                }
                let base = self.emit(x)?;
                let text = if is_cel_field(field) {
                    format!("{}.{field}", base.at(PRIMARY))
                } else {
                    format!("{}[{}]", base.at(PRIMARY), string_literal(field))
                };
                Out::new(text, PRIMARY, Ty::Dyn)
            }
            Expr::Index(x, index) => self.index(x, index)?,
            Expr::Call(name, args) => self.call(name, args)?,
            Expr::Closure(_) => {
                return Err(
                    "a predicate (`{...}`) outside all/any/none/one/filter/map/count".to_owned(),
                );
            }
            Expr::Not(x) => {
                let inner = self.emit(x)?;
                Out::new(format!("!{}", inner.at(UNARY)), UNARY, Ty::Bool)
            }
            Expr::Neg(x) => {
                let inner = self.emit(x)?;
                Out::new(format!("-{}", inner.at(UNARY)), UNARY, inner.ty)
            }
            Expr::Binary(op, a, b) => self.binary(*op, a, b)?,
            Expr::Cond(c, t, f) => {
                let (c, t, f) = (self.emit(c)?, self.emit(t)?, self.emit(f)?);
                let ty = if t.ty == f.ty { t.ty } else { Ty::Dyn };
                Out::new(
                    format!("{} ? {} : {}", c.at(OR), t.at(OR), f.at(COND)),
                    COND,
                    ty,
                )
            }
            Expr::List(items) => {
                let parts = items
                    .iter()
                    .map(|i| self.emit(i).map(|o| o.text))
                    .collect::<Result<Vec<_>, _>>()?;
                Out::new(format!("[{}]", parts.join(", ")), PRIMARY, Ty::List)
            }
        })
    }

    /// `e` written as a double when it is an integer literal.
    fn as_double(&self, e: &Expr, out: Out) -> Out {
        match e {
            Expr::Int(k) => Out::new(
                double_literal(*k as f64),
                if *k < 0 { UNARY } else { PRIMARY },
                Ty::Double,
            ),
            _ if out.ty == Ty::Int => {
                Out::new(format!("double({})", out.text), PRIMARY, Ty::Double)
            }
            _ => out,
        }
    }

    fn index(&self, x: &Expr, index: &Expr) -> Result<Out, String> {
        if *x == Expr::Result && self.shape == ResultShape::Prometheus {
            return match index {
                Expr::Int(0) => Ok(Out::new("result", PRIMARY, Ty::Double)),
                _ => Err(
                    "only result[0] carries over: Cutover gives a one-series answer as a number \
                     and several series as a list"
                        .to_owned(),
                ),
            };
        }
        if matches!(index, Expr::Int(k) if *k < 0) {
            return Err("negative indices have no counterpart".to_owned());
        }
        let base = self.emit(x)?;
        let i = self.emit(index)?;
        Ok(Out::new(
            format!("{}[{}]", base.at(PRIMARY), i.text),
            PRIMARY,
            Ty::Dyn,
        ))
    }

    fn call(&self, name: &str, args: &[Expr]) -> Result<Out, String> {
        let one = |what: &str| -> Result<Out, String> {
            match args {
                [a] => self.emit(a),
                _ => Err(format!("{what}() takes one argument")),
            }
        };
        Ok(match name {
            "len" => {
                if matches!(args, [Expr::Result]) && self.shape == ResultShape::Prometheus {
                    return Err(
                        "len(result) of a Prometheus answer: Cutover gives one series \
                                as a number, not a list"
                            .to_owned(),
                    );
                }
                Out::new(format!("size({})", one("len")?.text), PRIMARY, Ty::Int)
            }
            "isInf" => {
                let x = one("isInf")?.at(REL + 1);
                Out::new(
                    format!("({x} == double(\"Infinity\") || {x} == double(\"-Infinity\"))"),
                    PRIMARY,
                    Ty::Bool,
                )
            }
            "asInt" | "int" => Out::new(format!("int({})", one(name)?.text), PRIMARY, Ty::Int),
            "asFloat" | "float" => {
                Out::new(format!("double({})", one(name)?.text), PRIMARY, Ty::Double)
            }
            "string" => Out::new(format!("string({})", one(name)?.text), PRIMARY, Ty::Str),
            "max" | "min" => {
                let parts = args
                    .iter()
                    .map(|a| {
                        let out = self.emit(a)?;
                        Ok(self.as_double(a, out).text)
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                Out::new(format!("{name}({})", parts.join(", ")), PRIMARY, Ty::Double)
            }
            "all" | "any" | "none" | "one" | "filter" | "map" | "count" => {
                self.predicate(name, args)?
            }
            other => {
                return Err(format!(
                    "{other}() has no counterpart in Cutover's conditions (CEL)"
                ));
            }
        })
    }

    fn predicate(&self, name: &str, args: &[Expr]) -> Result<Out, String> {
        let [list, body] = args else {
            return Err(format!("{name}() takes a list and a predicate"));
        };
        let body = match body {
            Expr::Closure(inner) => &**inner,
            other => other,
        };
        if *list == Expr::Result && self.shape == ResultShape::Prometheus {
            return self.vector_predicate(name, body);
        }
        let var = match self.vars.len() {
            0 => "x".to_owned(),
            1 => "y".to_owned(),
            2 => "z".to_owned(),
            n => format!("v{n}"),
        };
        let mut inner = Emitter {
            shape: self.shape,
            vars: self.vars.clone(),
        };
        inner.vars.push(var.clone());
        let list = self.emit(list)?.at(PRIMARY);
        let body = inner.emit(body)?.text;
        Ok(match name {
            "all" => Out::new(format!("{list}.all({var}, {body})"), PRIMARY, Ty::Bool),
            "any" => Out::new(format!("{list}.exists({var}, {body})"), PRIMARY, Ty::Bool),
            "none" => Out::new(format!("!{list}.exists({var}, {body})"), UNARY, Ty::Bool),
            "one" => Out::new(
                format!("{list}.exists_one({var}, {body})"),
                PRIMARY,
                Ty::Bool,
            ),
            "filter" => Out::new(format!("{list}.filter({var}, {body})"), PRIMARY, Ty::List),
            "map" => Out::new(format!("{list}.map({var}, {body})"), PRIMARY, Ty::List),
            _ => Out::new(
                format!("size({list}.filter({var}, {body}))"),
                PRIMARY,
                Ty::Int,
            ),
        })
    }

    /// A predicate over a Prometheus vector, which Cutover gives as a number for one
    /// series: `all(result, # < k)` holds exactly when `max(result) < k`, for a number and a
    /// list alike. Other predicates cannot be carried over.
    fn vector_predicate(&self, name: &str, body: &Expr) -> Result<Out, String> {
        let unsupported = || {
            Err(format!(
                "{name}(result, ...) over a Prometheus answer: Cutover gives one series as a \
                 number, so only all/any/none with `# < k`, `# <= k`, `# > k` or `# >= k` \
                 carry over (as max(result) or min(result))"
            ))
        };
        let Expr::Binary(op, a, b) = body else {
            return unsupported();
        };
        let (op, bound) = match (&**a, &**b) {
            (Expr::Pointer, bound) if !mentions_pointer(bound) => (*op, bound),
            (bound, Expr::Pointer) if !mentions_pointer(bound) => (op.flipped(), bound),
            _ => return unsupported(),
        };
        if !matches!(op, Op::Lt | Op::Le | Op::Gt | Op::Ge) {
            return unsupported();
        }
        let below = matches!(op, Op::Lt | Op::Le);
        // all(#<k): max<k; any(#<k): min<k; none(#<k): min>=k (all(#>=k)).
        let (aggregate, op) = match (name, below) {
            ("all", true) => ("max", op),
            ("all", false) => ("min", op),
            ("any", true) => ("min", op),
            ("any", false) => ("max", op),
            ("none", true) => ("min", negate(op)),
            ("none", false) => ("max", negate(op)),
            _ => return unsupported(),
        };
        let bound = self.emit(bound)?;
        Ok(Out::new(
            format!("{aggregate}(result) {} {}", op.cel(), bound.at(ADD)),
            REL,
            Ty::Bool,
        ))
    }

    fn binary(&self, op: Op, a: &Expr, b: &Expr) -> Result<Out, String> {
        match op {
            Op::Pow => return Err("`**` (power) has no counterpart in CEL".to_owned()),
            Op::Range => return Err("ranges (`..`) have no counterpart in CEL".to_owned()),
            Op::Coalesce => return Err("`??` has no counterpart in CEL".to_owned()),
            _ => {}
        }
        let mut left = self.emit(a)?;
        let mut right = self.emit(b)?;
        let numeric = |t: Ty| matches!(t, Ty::Double | Ty::Dyn);
        if op.is_arithmetic() || matches!(op, Op::Eq | Op::Ne) {
            // CEL does not mix int and double in arithmetic, and `==` between them is false.
            if numeric(right.ty) && left.ty == Ty::Int {
                left = self.as_double(a, left);
            }
            if numeric(left.ty) && right.ty == Ty::Int {
                right = self.as_double(b, right);
            }
        }
        Ok(match op {
            Op::Or => Out::new(
                format!("{} || {}", left.at(OR), right.at(AND)),
                OR,
                Ty::Bool,
            ),
            Op::And => Out::new(
                format!("{} && {}", left.at(AND), right.at(REL)),
                AND,
                Ty::Bool,
            ),
            Op::Eq | Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge => Out::new(
                format!("{} {} {}", left.at(REL + 1), op.cel(), right.at(REL + 1)),
                REL,
                Ty::Bool,
            ),
            Op::In | Op::NotIn => {
                let list = match b {
                    Expr::List(items) if numeric(left.ty) => {
                        let parts = items
                            .iter()
                            .map(|i| {
                                let out = self.emit(i)?;
                                Ok(self.as_double(i, out).text)
                            })
                            .collect::<Result<Vec<_>, String>>()?;
                        format!("[{}]", parts.join(", "))
                    }
                    _ => right.at(REL + 1),
                };
                let text = format!("{} in {list}", left.at(REL + 1));
                if op == Op::NotIn {
                    Out::new(format!("!({text})"), UNARY, Ty::Bool)
                } else {
                    Out::new(text, REL, Ty::Bool)
                }
            }
            Op::Matches | Op::Contains | Op::StartsWith | Op::EndsWith => Out::new(
                format!("{}.{}({})", left.at(PRIMARY), op.cel(), right.text),
                PRIMARY,
                Ty::Bool,
            ),
            Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Mod => {
                if op == Op::Mod && !(left.ty == Ty::Int && right.ty == Ty::Int) {
                    return Err("`%` on numbers that are not integers has no counterpart \
                                (Cutover's numbers are doubles)"
                        .to_owned());
                }
                let prec = if matches!(op, Op::Add | Op::Sub) {
                    ADD
                } else {
                    MUL
                };
                let ty = match (left.ty, right.ty) {
                    (Ty::Int, Ty::Int) => Ty::Int,
                    (Ty::Str, _) | (_, Ty::Str) => Ty::Str,
                    (Ty::Double, _) | (_, Ty::Double) => Ty::Double,
                    _ => Ty::Dyn,
                };
                Out::new(
                    format!("{} {} {}", left.at(prec), op.cel(), right.at(prec + 1)),
                    prec,
                    ty,
                )
            }
            Op::Pow | Op::Range | Op::Coalesce => unreachable_op(op)?,
        })
    }
}

fn unreachable_op(op: Op) -> Result<Out, String> {
    Err(format!("`{}` has no counterpart in CEL", op.cel()))
}

fn negate(op: Op) -> Op {
    match op {
        Op::Lt => Op::Ge,
        Op::Le => Op::Gt,
        Op::Gt => Op::Le,
        Op::Ge => Op::Lt,
        other => other,
    }
}

fn mentions_pointer(e: &Expr) -> bool {
    match e {
        Expr::Pointer => true,
        Expr::Member(x, _) | Expr::Closure(x) | Expr::Not(x) | Expr::Neg(x) => mentions_pointer(x),
        Expr::Index(a, b) | Expr::Binary(_, a, b) => mentions_pointer(a) || mentions_pointer(b),
        Expr::Call(_, items) | Expr::List(items) => items.iter().any(mentions_pointer),
        Expr::Cond(a, b, c) => mentions_pointer(a) || mentions_pointer(b) || mentions_pointer(c),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use cel::objects::{Key, Value as Cel};

    use super::*;
    use ResultShape::{Json, Prometheus};

    /// A missing-data test was replaced (and is reported).
    const DROPPED: bool = true;
    const KEPT: bool = false;

    #[test]
    fn conditions_are_rewritten_into_cel() {
        // (Argo, shape, Cutover, whether a missing-data test was replaced)
        #[rustfmt::skip]
        let table: &[(&str, ResultShape, &str, bool)] = &[
            ("result[0] >= 0.95",                  Prometheus, "result >= 0.95", KEPT),
            ("result < 0.01 && result > 0",        Prometheus, "result < 0.01 && result > 0", KEPT),
            ("result < 0.01 and result > 0",       Json,       "result < 0.01 && result > 0", KEPT),
            ("result[0] < 0.05 or result[0] > 0.9", Prometheus, "result < 0.05 || result > 0.9", KEPT),
            ("not (result > 1)",                   Json,       "!(result > 1)", KEPT),
            ("result == 0",                        Prometheus, "result == 0.0", KEPT),
            ("result[0] != 1",                     Prometheus, "result != 1.0", KEPT),
            ("result * 100 < 1",                   Prometheus, "result * 100.0 < 1", KEPT),
            ("(result + 1) * 2 > 3",               Json,       "(result + 1.0) * 2.0 > 3", KEPT),
            ("result.successful == true",          Json,       "result.successful == true", KEPT),
            ("result.ok && result.successPercent >= 0.90", Json, "result.ok && result.successPercent >= 0.9", KEPT),
            ("result == true",                     Json,       "result == true", KEPT),
            ("result == 'I am OK'",                Json,       "result == \"I am OK\"", KEPT),
            ("result.data[0].status == \"up\"",    Json,       "result.data[0].status == \"up\"", KEPT),
            ("result['a-b'] > 1",                  Json,       "result[\"a-b\"] > 1", KEPT),
            ("asFloat(result) >= 0.5",             Json,       "double(result) >= 0.5", KEPT),
            ("asInt(result) == 3",                 Json,       "int(result) == 3", KEPT),
            ("result in ['ok', 'fine']",           Json,       "result in [\"ok\", \"fine\"]", KEPT),
            ("result not in [1, 2]",               Json,       "!(result in [1.0, 2.0])", KEPT),
            ("result matches '^ok'",               Json,       "result.matches(\"^ok\")", KEPT),
            ("result contains 'ok'",               Json,       "result.contains(\"ok\")", KEPT),
            ("result startsWith 'ok'",             Json,       "result.startsWith(\"ok\")", KEPT),
            ("result > 1 ? result < 5 : false",    Json,       "result > 1 ? result < 5 : false", KEPT),
            ("all(result, {# < 1000})",            Prometheus, "max(result) < 1000", KEPT),
            ("all(result, # < 1000)",              Prometheus, "max(result) < 1000", KEPT),
            ("all(result, 0.5 <= #)",              Prometheus, "min(result) >= 0.5", KEPT),
            ("any(result, # > 5)",                 Prometheus, "max(result) > 5", KEPT),
            ("none(result, # > 5)",                Prometheus, "max(result) <= 5", KEPT),
            ("all(result, {#.passed})",            Json,       "result.all(x, x.passed)", KEPT),
            ("all(result, .passed == true)",       Json,       "result.all(x, x.passed == true)", KEPT),
            ("any(result.pods, {# == 'down'})",    Json,       "result.pods.exists(x, x == \"down\")", KEPT),
            ("all(result, {any(#.c, {# > 1})})",   Json,       "result.all(x, x.c.exists(y, y > 1))", KEPT),
            ("none(result, {# > 3})",              Json,       "!result.exists(x, x > 3)", KEPT),
            ("count(result, {# > 3}) < 2",         Json,       "size(result.filter(x, x > 3)) < 2", KEPT),
            ("len(result.items) == 2",             Json,       "size(result.items) == 2", KEPT),
            ("len(result) >= 3",                   Json,       "size(result) >= 3", KEPT),
            ("result >= {{args.threshold}}",       Prometheus, "result >= {{args.threshold}}", KEPT),
            ("result[0] < {{ args.max-rate }}",    Prometheus, "result < {{args.max-rate}}", KEPT),
            ("isInf(result)",                      Prometheus, "(result == double(\"Infinity\") || result == double(\"-Infinity\"))", KEPT),
            ("result >= 1e3",                      Prometheus, "result >= 1000.0", KEPT),
            ("result >= 1_000",                    Prometheus, "result >= 1000", KEPT),
            ("result > -1",                        Prometheus, "result > -1", KEPT),
            // Missing data: the test is replaced by its value for present data.
            ("isNaN(result) || result >= 0.95",    Prometheus, "result >= 0.95", DROPPED),
            ("isNaN(result)",                      Prometheus, "false", DROPPED),
            ("!isNaN(result[0]) && result[0] < 0.01", Prometheus, "result < 0.01", DROPPED),
            ("len(result) == 0 || result[0] >= 0.95", Prometheus, "result >= 0.95", DROPPED),
            ("len(result) > 0 && result[0] >= 0.95", Prometheus, "result >= 0.95", DROPPED),
            ("0 < len(result) && result[0] >= 0.95", Prometheus, "result >= 0.95", DROPPED),
            ("len(result) == 0",                   Prometheus, "false", DROPPED),
            ("default(result, 0) < 0.05",          Json,       "result < 0.05", DROPPED),
            ("result ?? 0 < 0.05",                 Json,       "result < 0.05", DROPPED),
            ("result == \"\"",                     Json,       "false", DROPPED),
            ("result != nil && result > 2",        Json,       "result > 2", DROPPED),
        ];
        let mut failures = Vec::new();
        for (argo, shape, want, dropped) in table {
            match rewrite(argo, *shape) {
                Ok(r) if r.cel == *want && r.missing_data.is_some() == *dropped => {}
                Ok(r) => failures.push(format!(
                    "{argo:?} ({shape:?}): got {:?} (missing data: {:?}), want {want:?} ({dropped})",
                    r.cel, r.missing_data
                )),
                Err(e) => failures.push(format!("{argo:?} ({shape:?}): error {e}")),
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn what_cannot_be_rewritten_says_why() {
        #[rustfmt::skip]
        let table: &[(&str, ResultShape, &str)] = &[
            ("result[1] > 0",            Prometheus, "only result[0]"),
            ("result.x > 0",             Prometheus, "no fields"),
            ("len(result) == 2",         Prometheus, "len(result)"),
            ("all(result, {# == 1})",    Prometheus, "all(result, ...)"),
            ("result ** 2 > 4",          Json,       "power"),
            ("abs(result) < 1",          Json,       "abs()"),
            ("result?.x > 1",            Json,       "optional chaining"),
            ("foo > 1",                  Json,       "unknown name `foo`"),
            ("result >",                 Json,       "ends too early"),
            ("result > 1 1",             Json,       "unexpected"),
            ("result[-1] > 1",           Json,       "negative"),
            ("result % 2 == 0",          Json,       "`%`"),
            ("result > {{workflow.x}}",  Json,       "placeholder"),
            ("result == 'open",          Json,       "not closed"),
            ("result[1:2] == []",        Json,       "slices"),
            ("result | len() > 1",       Json,       "pipes"),
            ("1..3 == result",           Json,       "ranges"),
        ];
        for (argo, shape, why) in table {
            let err = rewrite(argo, *shape).expect_err(argo);
            assert!(err.contains(why), "{argo}: {err:?} should say {why:?}");
        }
    }

    #[test]
    fn conditions_that_read_structure_need_a_json_answer() {
        assert!(reads_structure("result.ok == true"));
        assert!(reads_structure("result[0] > 1"));
        assert!(reads_structure("result == true"));
        assert!(reads_structure("all(result, {# > 1})"));
        assert!(!reads_structure("result == 'OK'"));
        assert!(!reads_structure("result > 0.5"));
        assert!(!reads_structure("asFloat(result) > 0.5"));
    }

    /// Evaluates a rewritten condition with the CEL implementation Cutover uses.
    fn eval(cel_text: &str, result: Cel) -> bool {
        let program = cel::Program::compile(cel_text).unwrap();
        let mut context = cel::Context::default();
        context.add_variable_from_value("result", result);
        match program.execute(&context) {
            Ok(Cel::Bool(b)) => b,
            other => panic!("{cel_text}: {other:?}"),
        }
    }

    fn num(n: f64) -> Cel {
        Cel::Float(n)
    }

    fn text(s: &str) -> Cel {
        Cel::String(Arc::new(s.to_owned()))
    }

    fn list(values: &[f64]) -> Cel {
        Cel::List(Arc::new(values.iter().map(|v| Cel::Float(*v)).collect()))
    }

    fn object(fields: &[(&str, Cel)]) -> Cel {
        Cel::Map(cel::objects::Map {
            map: Arc::new(
                fields
                    .iter()
                    .map(|(k, v)| (Key::String(Arc::new((*k).to_owned())), v.clone()))
                    .collect(),
            ),
        })
    }

    #[test]
    fn rewrites_judge_values_as_argo_did() {
        let ok = |fields: &[(&str, Cel)]| object(fields);
        let items = Cel::List(Arc::new(vec![ok(&[("ok", Cel::Bool(true))])]));
        // (Argo condition, shape, the value as Cutover binds it, Argo's verdict). A one-series
        // Prometheus answer is a list for Argo ([0.97]) and a number for Cutover (0.97).
        #[rustfmt::skip]
        let cases: Vec<(&str, ResultShape, Cel, bool)> = vec![
            ("result[0] >= 0.95",           Prometheus, num(0.97), true),
            ("result[0] >= 0.95",           Prometheus, num(0.5), false),
            ("result == 0",                 Prometheus, num(0.0), true),
            ("result != 1",                 Prometheus, num(1.0), false),
            ("result * 100 < 1",            Prometheus, num(0.001), true),
            ("(result + 1) * 2 > 3",        Json,       num(1.0), true),
            ("result < 0.01 && result > 0", Prometheus, num(0.005), true),
            ("result < 0.01 && result > 0", Prometheus, num(0.0), false),
            ("result > -1",                 Prometheus, num(-0.5), true),
            ("all(result, # < 1000)",       Prometheus, list(&[10.0, 999.0]), true),
            ("all(result, # < 1000)",       Prometheus, list(&[10.0, 1001.0]), false),
            ("all(result, # < 1000)",       Prometheus, num(10.0), true),
            ("any(result, # > 5)",          Prometheus, list(&[1.0, 6.0]), true),
            ("none(result, # > 5)",         Prometheus, list(&[1.0, 6.0]), false),
            ("none(result, # > 5)",         Prometheus, num(2.0), true),
            ("isInf(result)",               Prometheus, num(f64::INFINITY), true),
            ("isInf(result)",               Prometheus, num(1.0), false),
            ("result.successful == true",   Json,       ok(&[("successful", Cel::Bool(true))]), true),
            ("result.count == 12",          Json,       ok(&[("count", num(12.0))]), true),
            ("result not in [1, 2]",        Json,       num(2.0), false),
            ("result not in [1, 2]",        Json,       num(3.0), true),
            ("result matches '^o'",         Json,       text("ok"), true),
            ("asFloat(result) >= 0.5",      Json,       text("0.7"), true),
            ("len(result.items) == 2",      Json,       ok(&[("items", list(&[1.0, 2.0]))]), true),
            ("all(result, {#.ok})",         Json,       items, true),
            ("count(result, {# > 3}) < 2",  Json,       list(&[4.0, 5.0]), false),
            ("isNaN(result) || result >= 0.95", Prometheus, num(0.9), false),
            ("len(result) > 0 && result[0] >= 0.95", Prometheus, num(0.99), true),
        ];
        for (argo, shape, value, want) in cases {
            let r = ok_rewrite(argo, shape);
            assert_eq!(
                eval(&r.cel, value.clone()),
                want,
                "{argo} → {} on {value:?}",
                r.cel
            );
        }
    }

    fn ok_rewrite(expr: &str, shape: ResultShape) -> Rewritten {
        rewrite(expr, shape).unwrap_or_else(|e| panic!("{expr}: {e}"))
    }
}
