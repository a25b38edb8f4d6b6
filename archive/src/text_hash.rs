//! A hasher for the texts the archive looks up within one process (run ids, dictionary
//! values): eight bytes per step, in the round of rustc's FxHash. The standard hasher resists
//! adversaries choosing keys, which a reader of its own archive does not face, and costs
//! several times more on a 64-character run id.
//!
//! Only for lookups: a map keyed with it is never iterated where the order could reach a
//! number or a file.

use std::hash::{BuildHasherDefault, Hasher};

/// [`TextHasher`] as a `HashMap`'s hasher.
pub(crate) type TextHashing = BuildHasherDefault<TextHasher>;

#[derive(Default)]
pub(crate) struct TextHasher(u64);

impl Hasher for TextHasher {
    fn write(&mut self, bytes: &[u8]) {
        // The length first: the last word is padded with zeros, which must not make "a" and
        // "a\0" one key.
        self.add(bytes.len() as u64);
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl TextHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn texts_that_differ_anywhere_hash_apart() {
        let hash = |text: &str| TextHashing::default().hash_one(text);
        let id = "3e7d296e0b7a8bd5c1a8c274e51a1313c31f6c57123d434cd5782688d6729a0b";
        let mut seen = std::collections::BTreeSet::new();
        for at in 0..id.len() {
            let mut changed = id.as_bytes().to_vec();
            changed[at] = b'x';
            assert!(
                seen.insert(hash(std::str::from_utf8(&changed).unwrap())),
                "{at}"
            );
        }
        // The length counts: a text and the same text with zeros after it differ.
        assert_ne!(hash("a"), hash("a\0"));
        assert_eq!(hash(id), hash(id));
        assert_ne!(
            TextHashing::default().hash_one(("run", 1u32)),
            TextHashing::default().hash_one(("run", 2u32))
        );
    }
}
