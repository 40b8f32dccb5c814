//! What is wrong with a config file, and how it is shown: one `file:line:col: message` line per problem, in file
//! order. Turns byte spans (from `toml` and from validation) into 1-based line and column; never decides what is a
//! problem.

use std::fmt;

use super::raw::Span;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based; 0 when the problem has no single place (an unreadable file, a missing table).
    pub line: usize,
    /// 1-based, in characters; 0 together with `line`.
    pub col: usize,
    /// One line: what is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.message)
        }
    }
}

/// Every problem found in a config file (never empty). `Display` writes one problem per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A problem found by validation: where (if anywhere) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Problem {
    pub span: Option<Span>,
    pub message: String,
}

impl ConfigErrors {
    /// The whole file is the problem (it cannot be read).
    pub(super) fn whole_file(file: &str, message: String) -> Self {
        let error = ConfigError {
            file: file.to_owned(),
            line: 0,
            col: 0,
            message,
        };
        ConfigErrors { errors: vec![error] }
    }

    /// A TOML syntax error or a serde type error (unknown key, wrong type, unknown enum variant).
    pub(super) fn from_toml(file: &str, text: &str, error: &toml::de::Error) -> Self {
        let message = error
            .message()
            .trim()
            .lines()
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("; ");
        Self::from_problems(
            file,
            text,
            vec![Problem {
                span: error.span(),
                message,
            }],
        )
    }

    /// Validation problems, sorted into file order (problems without a place first).
    pub(super) fn from_problems(file: &str, text: &str, problems: Vec<Problem>) -> Self {
        let mut errors: Vec<ConfigError> = problems
            .into_iter()
            .map(|problem| {
                let (line, col) = problem.span.map_or((0, 0), |span| position(text, span.start));
                ConfigError {
                    file: file.to_owned(),
                    line,
                    col,
                    message: one_line(problem.message),
                }
            })
            .collect();
        errors.sort_by_key(|error| (error.line, error.col));
        ConfigErrors { errors }
    }
}

/// A message as one line: the values it quotes may hold line breaks (a TOML `"""` string) or terminal escapes,
/// written as Rust writes them in a string (`\n`, `\u{1b}`).
fn one_line(message: String) -> String {
    if !message.contains(char::is_control) {
        return message;
    }
    message
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// 1-based line and column (in characters) of a byte offset; offsets past the end or inside a character are
/// clamped rather than trusted.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_is_one_based_and_counts_characters() {
        let text = "a = 1\nb = \"é\" x\n";
        assert_eq!(position(text, 0), (1, 1));
        assert_eq!(position(text, 4), (1, 5));
        assert_eq!(position(text, 6), (2, 1));
        let x = text.find('x').unwrap();
        assert_eq!(position(text, x), (2, 9));
    }

    #[test]
    fn position_clamps_bad_offsets() {
        let text = "é";
        assert_eq!(position(text, 1), (1, 1));
        assert_eq!(position(text, 99), (1, 2));
    }

    /// Messages quote values, and a TOML string may hold line breaks (`"""…"""`) or terminal escapes: found by the
    /// config fuzz target with `checkout_timeout = """…\n…"""`.
    #[test]
    fn a_quoted_value_cannot_break_the_one_line_per_problem_rule() {
        let text = "a = \"\"\"x\ny\"\"\"\nb = 1\n";
        let problems = vec![Problem {
            span: Some(4..13),
            message: "\"x\ny\r\u{1b}[2J\" is not a duration".into(),
        }];
        let errors = ConfigErrors::from_problems("p.toml", text, problems);
        assert_eq!(errors.errors[0].message, r#""x\ny\r\u{1b}[2J" is not a duration"#);
        assert_eq!(errors.to_string().lines().count(), 1);
    }

    #[test]
    fn display_is_one_line_per_problem_in_file_order() {
        let text = "a\nb\nc\n";
        let problems = vec![
            Problem {
                span: Some(4..5),
                message: "third".into(),
            },
            Problem {
                span: None,
                message: "nowhere".into(),
            },
            Problem {
                span: Some(0..1),
                message: "first".into(),
            },
        ];
        let errors = ConfigErrors::from_problems("p.toml", text, problems);
        assert_eq!(
            errors.to_string(),
            "p.toml: nowhere\np.toml:1:1: first\np.toml:3:1: third"
        );
    }
}
