//! Per-phase figures: one value for each phase of a chunk's pipeline (download, init,
//! decode, process, encode, upload), read and written by [`Phase`], so no code counts on
//! where a phase sits in a list.

use crate::proto::Phase;

/// One `T` per real [`Phase`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PerPhase<T> {
    values: [T; Phase::ALL.len()],
}

impl<T> PerPhase<T> {
    /// A value for every phase, made by `make`.
    pub fn from_fn(mut make: impl FnMut(Phase) -> T) -> Self {
        Self {
            values: std::array::from_fn(|i| make(Phase::ALL[i])),
        }
    }

    /// The value of `phase`; `None` for [`Phase::Unspecified`].
    pub fn get(&self, phase: Phase) -> Option<&T> {
        position(phase).map(|i| &self.values[i])
    }

    /// The value of `phase` to change; `None` for [`Phase::Unspecified`].
    pub fn get_mut(&mut self, phase: Phase) -> Option<&mut T> {
        position(phase).map(|i| &mut self.values[i])
    }

    /// Every phase with its value, in pipeline order.
    pub fn iter(&self) -> impl Iterator<Item = (Phase, &T)> {
        Phase::ALL.into_iter().zip(&self.values)
    }

    /// A value per phase made from this one's.
    pub fn map<U>(&self, mut f: impl FnMut(Phase, &T) -> U) -> PerPhase<U> {
        PerPhase {
            values: std::array::from_fn(|i| f(Phase::ALL[i], &self.values[i])),
        }
    }
}

impl<T: Copy> PerPhase<T> {
    /// The same value for every phase.
    pub fn splat(value: T) -> Self {
        Self::from_fn(|_| value)
    }

    /// The value of `phase`, or `fallback` for [`Phase::Unspecified`].
    pub fn value_or(&self, phase: Phase, fallback: T) -> T {
        self.get(phase).copied().unwrap_or(fallback)
    }
}

fn position(phase: Phase) -> Option<usize> {
    Phase::ALL.iter().position(|&p| p == phase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_read_and_written_by_phase() {
        let mut seconds = PerPhase::splat(0.0);
        *seconds.get_mut(Phase::Encode).expect("real phase") += 2.5;
        assert_eq!(seconds.value_or(Phase::Encode, -1.0), 2.5);
        assert_eq!(seconds.value_or(Phase::Unspecified, -1.0), -1.0);
        assert!(seconds.get_mut(Phase::Unspecified).is_none());
        let labels: Vec<&str> = seconds.iter().map(|(phase, _)| phase.label()).collect();
        assert_eq!(
            labels,
            ["download", "init", "decode", "process", "encode", "upload"]
        );
        let doubled = seconds.map(|_, s| s * 2.0);
        assert_eq!(doubled.value_or(Phase::Encode, 0.0), 5.0);
    }
}
