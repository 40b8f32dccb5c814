//! FxHash (as in rustc) for the maps on the hot path: a few instructions per 8-byte word, where SipHash takes a few
//! per byte. It has no random seed, so it is only for maps whose keys an attacker cannot fill with collisions that
//! hurt anyone else: keys pgsplit makes (statement ids), keys from config and catalog (function names), or keys one
//! client chooses for its own session (its statement names). Maps shared between clients and keyed by client text
//! (the shared statement table) keep std's SipHash.

use std::hash::{BuildHasherDefault, Hasher};

pub type FastHashMap<K, V> = std::collections::HashMap<K, V, FastBuildHasher>;
pub type FastBuildHasher = BuildHasherDefault<FastHasher>;

#[derive(Clone, Copy, Default)]
pub struct FastHasher(u64);

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        // The length first: the last word is padded with zeros, which must not make `a` and `a\0` alike.
        self.add(bytes.len() as u64);
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.add(u64::from_le_bytes(word.try_into().expect("chunks of 8")));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut word = [0; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn write_u64(&mut self, word: u64) {
        self.add(word);
    }

    fn write_usize(&mut self, word: usize) {
        self.add(word as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn equal_keys_hash_alike_and_near_keys_apart() {
        let build = FastBuildHasher::default();
        assert_eq!(build.hash_one("SELECT 1"), build.hash_one("SELECT 1"));
        assert_ne!(build.hash_one("SELECT 1"), build.hash_one("SELECT 2"));
        // A key that is a prefix of another, padded with zeros, still differs (str hashing ends with 0xff).
        assert_ne!(build.hash_one("abc"), build.hash_one("abc\0"));
        assert_ne!(build.hash_one(1u64), build.hash_one(2u64));
    }
}
