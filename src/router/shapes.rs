//! Statement shapes: a statement's tokens with constants and parameters left out, hashed — the same query with
//! other literals has the same shape. [`KnownWrites`] remembers the shapes a follower refused as writes (25006),
//! so they go straight to the leader next time (SPEC §3.5). Pure data; no I/O.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hasher};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use super::lexer::{Lexer, TokenKind};

/// Shapes remembered at most; past it the oldest knowledge is dropped wholesale (the safety net still catches).
const CAPACITY: usize = 10_000;

/// The hash of `sql`'s shape. Text that stops lexing hashes up to that point.
pub fn fingerprint(sql: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    for token in Lexer::new(sql) {
        let Ok(token) = token else { break };
        match token.kind {
            TokenKind::String | TokenKind::DollarString | TokenKind::Number | TokenKind::Param => hasher.write_u8(b'?'),
            TokenKind::Word => {
                for byte in token.text.bytes() {
                    hasher.write_u8(byte.to_ascii_lowercase());
                }
            }
            _ => hasher.write(token.text.as_bytes()),
        }
        hasher.write_u8(0);
    }
    hasher.finish()
}

#[derive(Default)]
pub struct KnownWrites {
    shapes: RwLock<HashSet<u64>>,
    /// Lets the common case (nothing learned yet) skip fingerprinting and the lock.
    any: AtomicBool,
}

impl KnownWrites {
    pub fn remember(&self, shape: u64) {
        let mut shapes = self.shapes.write().unwrap_or_else(|p| p.into_inner());
        if shapes.len() >= CAPACITY {
            shapes.clear();
        }
        shapes.insert(shape);
        self.any.store(true, Ordering::Release);
    }

    /// Whether `sql`'s shape drew 25006 from a follower before.
    pub fn contains(&self, sql: &str) -> bool {
        self.any.load(Ordering::Acquire)
            && self
                .shapes
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&fingerprint(sql))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_parameters_do_not_change_the_shape() {
        assert_eq!(fingerprint("SELECT f(1, 'a')"), fingerprint("select F( 22 ,  'bcd' )"));
        assert_eq!(fingerprint("SELECT f($1)"), fingerprint("SELECT f($2)"));
        assert_ne!(fingerprint("SELECT f(1)"), fingerprint("SELECT g(1)"));
        assert_ne!(fingerprint("SELECT \"F\"(1)"), fingerprint("SELECT f(1)"));
    }

    #[test]
    fn remembered_shapes_are_found_by_any_literal() {
        let known = KnownWrites::default();
        assert!(!known.contains("SELECT bump(1)"));
        known.remember(fingerprint("SELECT bump(1)"));
        assert!(known.contains("SELECT bump(99)"));
        assert!(!known.contains("SELECT other(1)"));
    }
}
