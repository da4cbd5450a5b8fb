//! Arrays indexed by an enum: one value per priority class ([`PerClass`]) or per outcome
//! ([`PerOutcome`]), so a signature says what its slots mean and an index cannot be off.
use std::ops::{Index, IndexMut};

use crate::model::{Outcome, Priority};

macro_rules! per_enum {
    ($(#[$doc:meta])* $name:ident, $key:ident, $n:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name<T>([T; $n]);

        impl<T> $name<T> {
            /// From the values in the order of the key type's `ALL`.
            pub const fn new(values: [T; $n]) -> Self {
                Self(values)
            }

            /// One value per key, from `f`.
            pub fn from_fn(mut f: impl FnMut($key) -> T) -> Self {
                Self(std::array::from_fn(|i| f($key::ALL[i])))
            }

            /// The values in the key's order.
            pub fn as_array(&self) -> &[T; $n] {
                &self.0
            }

            /// The values in the key's order, to change.
            pub fn as_array_mut(&mut self) -> &mut [T; $n] {
                &mut self.0
            }

            /// The values in the key's order.
            pub fn into_array(self) -> [T; $n] {
                self.0
            }

            /// Each key with its value, in the key's order.
            pub fn iter(&self) -> impl Iterator<Item = ($key, &T)> + '_ {
                $key::ALL.into_iter().zip(self.0.iter())
            }

            /// The values, in the key's order.
            pub fn values(&self) -> std::slice::Iter<'_, T> {
                self.0.iter()
            }
        }

        impl<T: Copy + std::iter::Sum<T>> $name<T> {
            /// The sum of all values.
            pub fn total(&self) -> T {
                self.0.iter().copied().sum()
            }
        }

        impl<T> From<[T; $n]> for $name<T> {
            fn from(values: [T; $n]) -> Self {
                Self(values)
            }
        }

        impl<T: PartialEq> PartialEq<[T; $n]> for $name<T> {
            fn eq(&self, other: &[T; $n]) -> bool {
                self.0 == *other
            }
        }

        impl<T> Index<$key> for $name<T> {
            type Output = T;
            fn index(&self, key: $key) -> &T {
                &self.0[key.index()]
            }
        }

        impl<T> IndexMut<$key> for $name<T> {
            fn index_mut(&mut self, key: $key) -> &mut T {
                &mut self.0[key.index()]
            }
        }
    };
}

per_enum!(
    /// One value per priority class, indexed by [`Priority`].
    ///
    /// ```
    /// use switchyard::{PerClass, Priority};
    /// let mut shed = PerClass::new([0u64, 0, 3, 9]);
    /// shed[Priority::Normal] += 1;
    /// assert_eq!(shed[Priority::Normal], 4);
    /// assert_eq!(shed.total(), 13);
    /// ```
    PerClass,
    Priority,
    4
);

per_enum!(
    /// One value per [`Outcome`], indexed by it.
    ///
    /// ```
    /// use switchyard::{Outcome, PerOutcome};
    /// let n = PerOutcome::from_fn(|o| u64::from(o == Outcome::Success) * 7);
    /// assert_eq!(n[Outcome::Success], 7);
    /// assert_eq!(n.total(), 7);
    /// ```
    PerOutcome,
    Outcome,
    6
);
