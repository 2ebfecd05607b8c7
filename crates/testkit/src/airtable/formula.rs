//! The small subset of Airtable's formula language that the fake evaluates.
//!
//! Supported: `{Field}='text'` (or `"text"`), `{Field}=''`, `RECORD_ID()='rec...'`, and
//! `AND(...)`, `OR(...)`, `NOT(...)` over those (function names in any case). Anything else
//! is an error, which the fake answers with 422 `INVALID_FILTER_BY_FORMULA`, so a test
//! notices when the code under test starts relying on more than the fake understands.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// A parsed formula.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Formula {
    And(Vec<Formula>),
    Or(Vec<Formula>),
    Not(Box<Formula>),
    Eq(Operand, Operand),
}

/// A value in a comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Operand {
    Field(String),
    Text(String),
    RecordId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Field(String),
    Text(String),
    Ident(String),
    Open,
    Close,
    Comma,
    Equals,
}

enum Node {
    Formula(Formula),
    Operand(Operand),
}

impl Formula {
    /// Parses a formula; the error says what is not supported or malformed.
    pub(crate) fn parse(source: &str) -> Result<Self, String> {
        let tokens = tokenize(source)?;
        let mut parser = Parser { tokens, pos: 0 };
        let formula = parser.formula()?;
        if parser.pos != parser.tokens.len() {
            return Err(format!(
                "unexpected {:?} after the end of the formula",
                parser.tokens[parser.pos]
            ));
        }
        Ok(formula)
    }

    /// The field names the formula refers to.
    pub(crate) fn fields(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.collect_fields(&mut out);
        out
    }

    fn collect_fields(&self, out: &mut BTreeSet<String>) {
        match self {
            Formula::And(items) | Formula::Or(items) => {
                items.iter().for_each(|f| f.collect_fields(out))
            }
            Formula::Not(inner) => inner.collect_fields(out),
            Formula::Eq(a, b) => {
                for operand in [a, b] {
                    if let Operand::Field(name) = operand {
                        out.insert(name.clone());
                    }
                }
            }
        }
    }

    /// Whether a record satisfies the formula.
    pub(crate) fn matches(&self, record_id: &str, fields: &Map<String, Value>) -> bool {
        match self {
            Formula::And(items) => items.iter().all(|f| f.matches(record_id, fields)),
            Formula::Or(items) => items.iter().any(|f| f.matches(record_id, fields)),
            Formula::Not(inner) => !inner.matches(record_id, fields),
            Formula::Eq(a, b) => {
                operand_text(a, record_id, fields) == operand_text(b, record_id, fields)
            }
        }
    }
}

fn operand_text(operand: &Operand, record_id: &str, fields: &Map<String, Value>) -> String {
    match operand {
        Operand::Text(text) => text.clone(),
        Operand::RecordId => record_id.to_owned(),
        Operand::Field(name) => fields.get(name).map(value_text).unwrap_or_default(),
    }
}

/// A cell's text as a formula sees it: lists joined with ", ", checkboxes as 1/0.
pub(crate) fn value_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => if *b { "1" } else { "0" }.to_owned(),
        Value::Array(items) => items.iter().map(value_text).collect::<Vec<_>>().join(", "),
        Value::Object(_) => String::new(),
    }
}

fn tokenize(source: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = source.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | ',' | '=' => {
                chars.next();
                tokens.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    ',' => Token::Comma,
                    _ => Token::Equals,
                });
            }
            '{' => {
                chars.next();
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(ch) => name.push(ch),
                        None => return Err("a field reference has no closing }".into()),
                    }
                }
                tokens.push(Token::Field(name));
            }
            '\'' | '"' => {
                let quote = c;
                chars.next();
                let mut text = String::new();
                loop {
                    match chars.next() {
                        Some('\\') => match chars.next() {
                            Some(escaped) => text.push(escaped),
                            None => return Err("a text ends with a lone backslash".into()),
                        },
                        Some(ch) if ch == quote => break,
                        Some(ch) => text.push(ch),
                        None => return Err("a text has no closing quote".into()),
                    }
                }
                tokens.push(Token::Text(text));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut ident = String::new();
                while let Some(&ch) = chars.peek() {
                    if ch.is_ascii_alphanumeric() || ch == '_' {
                        ident.push(ch);
                        chars.next();
                    } else {
                        break;
                    }
                }
                tokens.push(Token::Ident(ident));
            }
            other => {
                return Err(format!(
                    "{other:?} is not supported by the fake (only =, AND, OR, NOT, RECORD_ID)"
                ))
            }
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        token
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn expect(&mut self, expected: Token) -> Result<(), String> {
        match self.next() {
            Some(token) if token == expected => Ok(()),
            Some(token) => Err(format!("expected {expected:?}, found {token:?}")),
            None => Err(format!("expected {expected:?}, found the end")),
        }
    }

    fn formula(&mut self) -> Result<Formula, String> {
        let left = self.node()?;
        if self.peek() == Some(&Token::Equals) {
            self.pos += 1;
            let right = self.node()?;
            return match (left, right) {
                (Node::Operand(a), Node::Operand(b)) => Ok(Formula::Eq(a, b)),
                _ => Err("only fields, texts and RECORD_ID() can be compared".into()),
            };
        }
        match left {
            Node::Formula(formula) => Ok(formula),
            Node::Operand(operand) => Err(format!(
                "{operand:?} alone is not a condition; the fake needs a comparison with ="
            )),
        }
    }

    fn node(&mut self) -> Result<Node, String> {
        match self.next() {
            Some(Token::Field(name)) => Ok(Node::Operand(Operand::Field(name))),
            Some(Token::Text(text)) => Ok(Node::Operand(Operand::Text(text))),
            Some(Token::Ident(name)) => {
                self.expect(Token::Open)?;
                match name.to_ascii_uppercase().as_str() {
                    "RECORD_ID" => {
                        self.expect(Token::Close)?;
                        Ok(Node::Operand(Operand::RecordId))
                    }
                    function @ ("AND" | "OR" | "NOT") => {
                        let mut args = vec![self.formula()?];
                        loop {
                            match self.next() {
                                Some(Token::Comma) => args.push(self.formula()?),
                                Some(Token::Close) => break,
                                other => {
                                    return Err(format!("expected , or ) in {function}, found {other:?}"))
                                }
                            }
                        }
                        Ok(Node::Formula(match function {
                            "AND" => Formula::And(args),
                            "OR" => Formula::Or(args),
                            _ if args.len() == 1 => {
                                Formula::Not(Box::new(args.remove(0)))
                            }
                            _ => return Err("NOT takes exactly one argument".into()),
                        }))
                    }
                    _ => Err(format!(
                        "the function {name} is not supported by the fake (only AND, OR, NOT, RECORD_ID)"
                    )),
                }
            }
            Some(token) => Err(format!("unexpected {token:?}")),
            None => Err("the formula is empty or ends too early".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn supported_formulas_evaluate() {
        let record = fields(json!({"Status": "Auto-Send", "Email": "a@x.com", "Tags": ["a", "b"]}));
        let cases = [
            ("{Status}='Auto-Send'", true),
            ("{Status}=\"Sent\"", false),
            ("{Missing}=''", true),
            ("{Email}=''", false),
            ("NOT({Email}='')", true),
            ("and({Status}='Auto-Send', NOT({Email}=''))", true),
            ("OR({Status}='Sent', RECORD_ID()='rec1')", true),
            ("OR({Status}='Sent', RECORD_ID()='rec2')", false),
            ("{Tags}='a, b'", true),
            ("'it\\'s'=\"it's\"", true),
        ];
        for (source, expected) in cases {
            let formula = Formula::parse(source).unwrap_or_else(|e| panic!("{source}: {e}"));
            assert_eq!(formula.matches("rec1", &record), expected, "{source}");
        }
    }

    #[test]
    fn everything_else_is_refused() {
        for source in [
            "",
            "{Status}",
            "{Status}!='x'",
            "{Count}>3",
            "{Count}=3",
            "FIND('a', {Email})",
            "AND()",
            "NOT({A}='x', {B}='y')",
            "{Status}='x' extra",
            "{Unclosed='x'",
            "{A}='unclosed",
            "AND({A}='x'",
            "{A}=AND({B}='x')",
        ] {
            assert!(
                Formula::parse(source).is_err(),
                "{source:?} should be refused"
            );
        }
    }
}
