//! Capability interning: names become bit positions once, at configuration time.
//!
//! A node's capabilities and a task's requirements are [`CapSet`]s (four 64-bit words, so up
//! to [`MAX_CAPABILITIES`] = 256 names), and "can this route serve that task" is four word-wide
//! ANDs. Bits are append-only: a name keeps its bit for the life of the router, so a `CapSet`
//! resolved before a reload stays valid after it.
use std::collections::HashMap;
use std::fmt;

use crate::error::ConfigError;

pub use crate::limits::MAX_CAPABILITIES;
const WORDS: usize = MAX_CAPABILITIES / 64;

/// A set of interned capabilities, as a fixed 256-bit bitset.
///
/// # Examples
/// ```
/// use switchyard::CapSet;
/// let a = CapSet::from_bits([0, 3, 200]);
/// let b = CapSet::from_bits([3]);
/// assert!(a.contains_all(&b));
/// assert!(!b.contains_all(&a));
/// assert_eq!(a.len(), 3);
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CapSet([u64; WORDS]);

impl CapSet {
    /// The empty set: a task with no requirements can go anywhere.
    pub const EMPTY: CapSet = CapSet([0; WORDS]);

    /// A set from bit positions; positions at or past [`MAX_CAPABILITIES`] are ignored.
    pub fn from_bits<I: IntoIterator<Item = usize>>(bits: I) -> Self {
        let mut s = Self::EMPTY;
        for b in bits {
            s.insert(b);
        }
        s
    }

    /// Adds bit `bit` (ignored when out of range).
    pub fn insert(&mut self, bit: usize) {
        if bit < MAX_CAPABILITIES {
            self.0[bit / 64] |= 1u64 << (bit % 64);
        }
    }

    /// Whether bit `bit` is set.
    #[inline]
    pub fn contains(&self, bit: usize) -> bool {
        bit < MAX_CAPABILITIES && self.0[bit / 64] & (1u64 << (bit % 64)) != 0
    }

    /// Whether every bit of `required` is in `self`: four ANDs and compares.
    #[inline]
    pub fn contains_all(&self, required: &CapSet) -> bool {
        let mut missing = 0u64;
        for i in 0..WORDS {
            missing |= required.0[i] & !self.0[i];
        }
        missing == 0
    }

    /// Number of capabilities in both sets.
    #[inline]
    pub fn intersection_len(&self, other: &CapSet) -> usize {
        (0..WORDS)
            .map(|i| (self.0[i] & other.0[i]).count_ones() as usize)
            .sum()
    }

    /// The union of two sets.
    pub fn union(&self, other: &CapSet) -> CapSet {
        let mut out = *self;
        for i in 0..WORDS {
            out.0[i] |= other.0[i];
        }
        out
    }

    /// Number of capabilities in the set.
    pub fn len(&self) -> usize {
        // Most words of a task's set are zero: skip them (the baseline x86-64 target has no
        // popcount instruction, so each `count_ones` is a dozen instructions).
        self.0
            .iter()
            .filter(|&&w| w != 0)
            .map(|w| w.count_ones() as usize)
            .sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0 == [0; WORDS]
    }

    /// The set bit positions, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..WORDS).flat_map(move |w| {
            let mut word = self.0[w];
            std::iter::from_fn(move || {
                if word == 0 {
                    return None;
                }
                let b = word.trailing_zeros() as usize;
                word &= word - 1;
                Some(w * 64 + b)
            })
        })
    }
}

impl fmt::Debug for CapSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// The append-only table of capability names and their bit positions.
///
/// Lives on the control path; the routing snapshot keeps a shared copy of the names so that
/// gateway threads can resolve names without touching the control thread.
#[derive(Clone, Debug, Default)]
pub struct CapabilityRegistry {
    names: Vec<String>,
    index: HashMap<String, u16>,
}

impl CapabilityRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Interns `name`, returning its bit; a name already present keeps its bit.
    ///
    /// # Errors
    /// [`ConfigError::TooManyCapabilities`] past [`MAX_CAPABILITIES`] names, and
    /// [`ConfigError::InvalidName`] for an empty name.
    pub fn intern(&mut self, name: &str) -> Result<usize, ConfigError> {
        if let Some(&b) = self.index.get(name) {
            return Ok(b as usize);
        }
        if name.trim().is_empty() {
            return Err(ConfigError::InvalidName {
                what: "capability",
                name: name.to_string(),
            });
        }
        if self.names.len() >= MAX_CAPABILITIES {
            return Err(ConfigError::TooManyCapabilities {
                max: MAX_CAPABILITIES,
            });
        }
        let bit = self.names.len();
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), bit as u16);
        Ok(bit)
    }

    /// The bit of a known name.
    pub fn get(&self, name: &str) -> Option<usize> {
        self.index.get(name).map(|&b| b as usize)
    }

    /// Resolves names into a set; an unknown name is an error (never silently dropped).
    ///
    /// # Errors
    /// [`ConfigError::UnknownCapability`] naming the first unknown name.
    pub fn resolve<S: AsRef<str>>(&self, names: &[S]) -> Result<CapSet, ConfigError> {
        let mut set = CapSet::EMPTY;
        for n in names {
            let n = n.as_ref();
            match self.get(n) {
                Some(b) => set.insert(b),
                None => return Err(ConfigError::UnknownCapability(n.to_string())),
            }
        }
        Ok(set)
    }

    /// The name of bit `bit`.
    pub fn name(&self, bit: usize) -> Option<&str> {
        self.names.get(bit).map(String::as_str)
    }

    /// Number of interned names.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no name is interned.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn bits_across_words() {
        let s = CapSet::from_bits([0, 63, 64, 127, 128, 255, 256]);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 63, 64, 127, 128, 255]);
        assert!(s.contains(255) && !s.contains(256) && !s.contains(1));
        assert!(s.contains_all(&CapSet::from_bits([64, 255])));
        assert!(!s.contains_all(&CapSet::from_bits([65])));
        assert!(CapSet::EMPTY.is_empty() && s.contains_all(&CapSet::EMPTY));
        assert_eq!(s.union(&CapSet::from_bits([1])).len(), 7);
        assert_eq!(format!("{:?}", CapSet::from_bits([2, 5])), "{2, 5}");
    }

    #[test]
    fn registry_interns_once_and_rejects_unknown() {
        let mut r = CapabilityRegistry::new();
        assert!(r.is_empty());
        assert_eq!(r.intern("chat").unwrap(), 0);
        assert_eq!(r.intern("code").unwrap(), 1);
        assert_eq!(r.intern("chat").unwrap(), 0);
        assert_eq!(r.len(), 2);
        assert_eq!(r.name(1), Some("code"));
        assert_eq!(r.resolve(&["code"]).unwrap(), CapSet::from_bits([1]));
        assert_eq!(
            r.resolve(&["chat", "vision"]),
            Err(ConfigError::UnknownCapability("vision".into()))
        );
        assert!(matches!(
            r.intern(" "),
            Err(ConfigError::InvalidName { .. })
        ));
    }

    #[test]
    fn registry_caps_at_max() {
        let mut r = CapabilityRegistry::new();
        for i in 0..MAX_CAPABILITIES {
            r.intern(&format!("c{i}")).unwrap();
        }
        assert_eq!(
            r.intern("one-too-many"),
            Err(ConfigError::TooManyCapabilities { max: 256 })
        );
        assert_eq!(r.intern("c255").unwrap(), 255);
    }
}
