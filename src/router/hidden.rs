//! Session state a statement may change that its text does not show: what a DO block, CALL or a user function does
//! inside (a SET, a temporary table, a session lock, `set_config(…, false)`), and `set_config` itself, whose name
//! and value are expressions. The session layer cannot track these from the text; it checks the server connection
//! after the unit instead (`session::hidden`). A `set_config` whose name is written out is the common case (row
//! level security's `set_config('app.tenant', $1, false)`): its setting is named, to be read back.
//!
//! The tracker follows one `set_config(…)` call's arguments as the cursor passes their tokens. No allocation.

use super::lexer::{Span, Token, TokenKind};

/// What one statement may do to session state unseen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HiddenState {
    /// Anything at all: DO, CALL, a call of a user function, a `set_config` not followed exactly.
    pub unseen: bool,
    /// Settings in particular: DO, CALL, a `set_config` whose name is not written out (worth reading them all back;
    /// a user function is not, being called far more often and rarely setting anything).
    pub settings: bool,
    /// The setting of a `set_config('name', value, is_local)` whose name is a plain literal and whose `is_local`
    /// is not the literal `true` (the first such call): a session setting, to be read back after the unit.
    pub setting: Option<Span>,
}

/// One `set_config(` call whose arguments are being passed.
#[derive(Clone, Copy, Debug)]
struct Call {
    /// Paren depth of the tokens directly inside the call.
    depth: u32,
    /// Which argument (0-based), and how many of its tokens have passed.
    argument: u8,
    tokens: u8,
    /// The first argument is one plain `'…'` literal so far.
    name: Option<Span>,
    /// The third argument is the one token `true` so far.
    local: bool,
}

/// Follows `set_config` calls through a statement's tokens.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tracker {
    call: Option<Call>,
    pub state: HiddenState,
}

impl Tracker {
    /// A `set_config(` was seen; `depth` is the paren depth inside it.
    pub fn set_config_call(&mut self, depth: u32) {
        if self.call.is_some() {
            // A call inside a call's arguments: not followed.
            self.block();
        }
        self.call = Some(Call {
            depth,
            argument: 0,
            tokens: 0,
            name: None,
            local: false,
        });
    }

    /// A user function: anything may change.
    pub fn anything(&mut self) {
        self.state.unseen = true;
    }

    /// DO or CALL: anything may change, settings likely.
    pub fn block(&mut self) {
        self.state.unseen = true;
        self.state.settings = true;
    }

    /// The token `t`, at paren depth `depth` (before `t` itself changes it).
    pub fn token(&mut self, t: &Token, depth: u32) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if depth < call.depth {
            return;
        }
        if depth == call.depth {
            match t.kind {
                TokenKind::RParen => return self.end(),
                TokenKind::Comma => {
                    call.argument = call.argument.saturating_add(1);
                    call.tokens = 0;
                    return;
                }
                _ => {}
            }
        }
        call.tokens = call.tokens.saturating_add(1);
        match (call.argument, call.tokens) {
            // A backslash may be an escape (standard_conforming_strings off): the name is not taken as written.
            (0, 1) if t.kind == TokenKind::String && t.text.starts_with('\'') && !t.text.contains('\\') => {
                call.name = Some(t.span())
            }
            (0, _) => call.name = None,
            (2, 1) => call.local = t.kind == TokenKind::Word && t.text.eq_ignore_ascii_case("true"),
            (2, _) => call.local = false,
            _ => {}
        }
    }

    /// The call's closing parenthesis.
    fn end(&mut self) {
        let Some(call) = self.call.take() else {
            return;
        };
        if call.argument == 2 && call.local {
            return; // transaction-local: gone with the transaction
        }
        match (call.name, self.state.setting) {
            (Some(name), None) => self.state.setting = Some(name),
            _ => self.block(),
        }
    }

    /// The statement ended: a call still open was not followed.
    pub fn finish(&mut self) -> HiddenState {
        if self.call.take().is_some() {
            self.block();
        }
        self.state
    }
}

/// The setting a `'…'` literal names: quotes off, `''` made `'`, lower case (setting names compare so).
pub fn literal_setting(text: &str) -> String {
    let inner = text
        .strip_prefix('\'')
        .and_then(|t| t.strip_suffix('\''))
        .unwrap_or(text);
    inner.replace("''", "'").to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::{FunctionSet, statements};

    fn hidden(sql: &str) -> HiddenState {
        let functions = FunctionSet::new::<&str, &str>(&[], &[], [("public", "set_tenant")]);
        let statement = statements(sql, &functions).next().expect("a statement");
        statement.hidden
    }

    fn setting(sql: &str) -> Option<String> {
        hidden(sql).setting.map(|span| literal_setting(span.text(sql)))
    }

    #[test]
    fn what_a_statement_may_change_unseen() {
        assert_eq!(hidden("SELECT 1"), HiddenState::default());
        assert!(hidden("SELECT set_tenant('a')").unseen, "a user function");
        assert!(hidden("SELECT public.set_tenant($1)").unseen);
        assert!(hidden("DO $$ BEGIN PERFORM 1; END $$").settings);
        assert!(
            !hidden("SELECT set_tenant('a')").settings,
            "functions rarely set anything"
        );
        assert!(hidden("CALL p()").unseen);
        assert!(!hidden("SELECT nextval('s')").unseen, "a built-in");
        assert_eq!(
            setting("SELECT set_config('App.Tenant', $1, false)").as_deref(),
            Some("app.tenant")
        );
        assert!(!hidden("SELECT set_config('app.tenant', $1, false)").unseen);
        assert_eq!(
            hidden("SELECT set_config('app.tenant', 'x', true)"),
            HiddenState::default()
        );
        assert_eq!(
            setting("SELECT pg_catalog.set_config('a.b', f(1, 2), $2)").as_deref(),
            Some("a.b")
        );
        assert!(
            hidden("SELECT set_config($1, 'x', false)").settings,
            "a name not written out"
        );
        assert!(hidden("SELECT set_config('a' || 'b', 'x', false)").unseen);
        let two = hidden("SELECT set_config('a.b', '1', false), set_config('c.d', '2', false)");
        assert!(two.unseen && two.setting.is_some(), "only the first is read back");
    }
}
