//! `\set` expressions: integer arithmetic (`+ - * / %`, unary minus, parentheses) over numbers and variables,
//! with `random(lo, hi)`, `abs`, `least` and `greatest`; parsed once (errors as text for `script` to place at a
//! file and line), evaluated per transaction with checked arithmetic (an overflow or a division by zero fails
//! that transaction, not the run).

use std::fmt;

use rand::RngExt;
use rand::rngs::SmallRng;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Int(i64),
    Var(usize),
    Neg(Box<Expr>),
    Binary(Op, Box<Expr>, Box<Expr>),
    Call(Function, Vec<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Random,
    Abs,
    Least,
    Greatest,
}

/// Why an expression has no value (the transaction fails with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalError(pub String);

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Expr {
    pub fn eval(&self, values: &[i64], rng: &mut SmallRng) -> Result<i64, EvalError> {
        let overflow = || EvalError("integer overflow in \\set".into());
        Ok(match self {
            Expr::Int(n) => *n,
            Expr::Var(slot) => values[*slot],
            Expr::Neg(e) => e.eval(values, rng)?.checked_neg().ok_or_else(overflow)?,
            Expr::Binary(op, a, b) => {
                let (a, b) = (a.eval(values, rng)?, b.eval(values, rng)?);
                match op {
                    Op::Add => a.checked_add(b),
                    Op::Sub => a.checked_sub(b),
                    Op::Mul => a.checked_mul(b),
                    Op::Div | Op::Mod if b == 0 => return Err(EvalError("division by zero in \\set".into())),
                    Op::Div => a.checked_div(b),
                    Op::Mod => a.checked_rem(b),
                }
                .ok_or_else(overflow)?
            }
            Expr::Call(function, args) => {
                let args = args
                    .iter()
                    .map(|a| a.eval(values, rng))
                    .collect::<Result<Vec<_>, _>>()?;
                match function {
                    Function::Random if args[0] > args[1] => {
                        return Err(EvalError(format!(
                            "random({}, {}): the range is empty",
                            args[0], args[1]
                        )));
                    }
                    Function::Random => rng.random_range(args[0]..=args[1]),
                    Function::Abs => args[0].checked_abs().ok_or_else(overflow)?,
                    Function::Least => args.iter().copied().min().unwrap_or_default(),
                    Function::Greatest => args.iter().copied().max().unwrap_or_default(),
                }
            }
        })
    }
}

/// Recursive descent over one `\set` expression.
pub struct ExprParser<'a> {
    tokens: Vec<Token<'a>>,
    at: usize,
    variables: &'a [String],
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Token<'a> {
    Int(i64),
    Var(&'a str),
    Name(&'a str),
    Symbol(char),
}

impl<'a> ExprParser<'a> {
    /// `text` with `variables` (by slot) known.
    pub fn parse(text: &'a str, variables: &'a [String]) -> Result<Expr, String> {
        let mut parser = ExprParser {
            tokens: tokenize(text)?,
            at: 0,
            variables,
        };
        let expr = parser.sum()?;
        match parser.tokens.get(parser.at) {
            None => Ok(expr),
            Some(token) => Err(format!("unexpected {} in \"{}\"", describe(token), text.trim())),
        }
    }

    fn next(&mut self) -> Option<Token<'a>> {
        let token = self.tokens.get(self.at).copied();
        self.at += 1;
        token
    }

    fn peek_symbol(&self, symbols: &str) -> Option<char> {
        match self.tokens.get(self.at) {
            Some(Token::Symbol(c)) if symbols.contains(*c) => Some(*c),
            _ => None,
        }
    }

    fn sum(&mut self) -> Result<Expr, String> {
        let mut expr = self.product()?;
        while let Some(c) = self.peek_symbol("+-") {
            self.at += 1;
            let op = if c == '+' { Op::Add } else { Op::Sub };
            expr = Expr::Binary(op, Box::new(expr), Box::new(self.product()?));
        }
        Ok(expr)
    }

    fn product(&mut self) -> Result<Expr, String> {
        let mut expr = self.unary()?;
        while let Some(c) = self.peek_symbol("*/%") {
            self.at += 1;
            let op = match c {
                '*' => Op::Mul,
                '/' => Op::Div,
                _ => Op::Mod,
            };
            expr = Expr::Binary(op, Box::new(expr), Box::new(self.unary()?));
        }
        Ok(expr)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.peek_symbol("-").is_some() {
            self.at += 1;
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        match self.next() {
            Some(Token::Int(n)) => Ok(Expr::Int(n)),
            Some(Token::Var(name)) => match self.variables.iter().position(|v| v == name) {
                Some(slot) => Ok(Expr::Var(slot)),
                None => Err(format!(
                    ":{name} is not set by an earlier \\set (known: {})",
                    self.variables.join(", ")
                )),
            },
            Some(Token::Symbol('(')) => {
                let expr = self.sum()?;
                self.expect(')')?;
                Ok(expr)
            }
            Some(Token::Name(name)) => self.call(name),
            Some(token) => Err(format!("unexpected {}", describe(&token))),
            None => Err("the expression ends too soon".into()),
        }
    }

    fn call(&mut self, name: &str) -> Result<Expr, String> {
        let (function, arity) = match name.to_ascii_lowercase().as_str() {
            "random" => (Function::Random, 2..=2),
            "abs" => (Function::Abs, 1..=1),
            "least" => (Function::Least, 1..=usize::MAX),
            "greatest" => (Function::Greatest, 1..=usize::MAX),
            _ => {
                return Err(format!(
                    "unknown function {name}() (bench knows random, abs, least, greatest)"
                ));
            }
        };
        self.expect('(')?;
        let mut args = vec![self.sum()?];
        while self.peek_symbol(",").is_some() {
            self.at += 1;
            args.push(self.sum()?);
        }
        self.expect(')')?;
        if !arity.contains(&args.len()) {
            return Err(format!(
                "{name}() takes {} arguments, not {}",
                arity.start(),
                args.len()
            ));
        }
        Ok(Expr::Call(function, args))
    }

    fn expect(&mut self, symbol: char) -> Result<(), String> {
        match self.next() {
            Some(Token::Symbol(c)) if c == symbol => Ok(()),
            Some(token) => Err(format!("expected '{symbol}', found {}", describe(&token))),
            None => Err(format!("expected '{symbol}' before the end")),
        }
    }
}

fn describe(token: &Token) -> String {
    match token {
        Token::Int(n) => format!("number {n}"),
        Token::Var(name) => format!(":{name}"),
        Token::Name(name) => format!("\"{name}\""),
        Token::Symbol(c) => format!("'{c}'"),
    }
}

fn tokenize(text: &str) -> Result<Vec<Token<'_>>, String> {
    let mut tokens = Vec::new();
    let mut rest = text.trim_start();
    while let Some(c) = rest.chars().next() {
        let len = if c.is_ascii_digit() {
            let len = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            if rest[len..].starts_with(['.', 'e', 'E']) {
                return Err(format!("\"{}\": only whole numbers are supported", rest.trim()));
            }
            let n = rest[..len]
                .parse()
                .map_err(|_| format!("{} is too large for a 64-bit integer", &rest[..len]))?;
            tokens.push(Token::Int(n));
            len
        } else if c == ':' {
            let len = rest[1..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len() - 1);
            if len == 0 {
                return Err("':' must be followed by a variable name".into());
            }
            tokens.push(Token::Var(&rest[1..1 + len]));
            1 + len
        } else if c.is_ascii_alphabetic() || c == '_' {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            tokens.push(Token::Name(&rest[..len]));
            len
        } else if "+-*/%(),".contains(c) {
            tokens.push(Token::Symbol(c));
            1
        } else {
            return Err(format!("unexpected '{c}' in \"{}\"", text.trim()));
        };
        rest = rest[len..].trim_start();
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn expressions_evaluate_with_precedence_and_functions() {
        let vars = vec!["scale".to_string(), "client_id".to_string()];
        let mut rng = SmallRng::seed_from_u64(7);
        let eval = |text: &str, rng: &mut SmallRng| ExprParser::parse(text, &vars).unwrap().eval(&[3, 9], rng);
        assert_eq!(eval("1 + 2 * 3 - -4", &mut rng), Ok(11));
        assert_eq!(eval("(1 + 2) * :scale % 4", &mut rng), Ok(1));
        assert_eq!(
            eval("greatest(1, :client_id, 5) + least(2, -1) + abs(-3)", &mut rng),
            Ok(11)
        );
        for _ in 0..100 {
            let n = eval("random(1, 10 * :scale)", &mut rng).unwrap();
            assert!((1..=30).contains(&n), "{n}");
        }
        assert!(eval("1 / (:scale - 3)", &mut rng).is_err(), "division by zero");
        assert!(eval("random(5, 1)", &mut rng).is_err(), "empty range");
        assert!(eval("9223372036854775807 + 1", &mut rng).is_err(), "overflow");
    }
}
