//! The router decides; it never does I/O. Pure functions over the SQL text and (later) a topology snapshot.
//!
//! Today: the SQL classifier. [`classify`] tells whether a simple-Query string is provably read-only (SPEC §3.1) and
//! why; [`statements`] walks its statements one by one with the [`StatementKind`]s the session layer tracks (BEGIN,
//! SET, PREPARE, LISTEN, …). The pieces: [`lexer`] (PostgreSQL's lexical rules, no allocation), `cursor` (one
//! statement's tokens and their write markers), `grammar` (statement shapes), `classify` (shapes + markers →
//! verdicts), [`functions`] (which calls write), [`standby`] (what a hot standby answers otherwise), `statement` (the
//! result types).

mod classify;
mod cursor;
pub mod encoding;
pub mod functions;
mod grammar;
pub mod hidden;
pub mod lexer;
pub mod route;
pub mod shapes;
pub mod standby;
mod statement;

pub use classify::{Statements, classify, statements};
pub use encoding::ClientEncoding;
pub use functions::{FunctionSet, parse_function_name};
pub use lexer::{LexError, Lexer, Span, Token, TokenKind};
pub use route::{Decision, Floor, RouteReason, Wants, route};
pub use shapes::{KnownWrites, fingerprint};
pub use statement::{Access, Classification, Isolation, Name, Reason, SavepointOp, Statement, StatementKind};
