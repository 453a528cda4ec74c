//! [`DayRing`]: a family's state per calendar day, for the days held, in a ring of slots.
//!
//! Slot `day mod len` holds that day; a slot is reused when its day comes round again, so
//! memory is bounded by the retention, not by history. The router drops events older than
//! the retention, so a write never meets a slot holding a newer day (if it did, the write
//! is refused and the family counts it).

use serde::{Deserialize, Serialize};

use crate::time::Day;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DayRing<T> {
    slots: Vec<Option<Dated<T>>>,
}

/// A ring of no slots: holds nothing and refuses every write until [`DayRing::fit`] gives it
/// its slots (a family absent from an older state image starts so; see
/// [`crate::families`]).
impl<T> Default for DayRing<T> {
    fn default() -> Self {
        DayRing { slots: Vec::new() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Dated<T> {
    day: Day,
    value: T,
}

impl<T> DayRing<T> {
    /// Today plus `retention_days` before it.
    pub fn new(retention_days: u32) -> DayRing<T> {
        let slots = (0..=retention_days).map(|_| None).collect();
        DayRing { slots }
    }

    /// The slot of `day`; `None` for a ring of no slots.
    fn slot(&self, day: Day) -> Option<usize> {
        let len = self.slots.len() as Day;
        (len > 0).then(|| day.rem_euclid(len) as usize)
    }

    /// The value of `day`, if held.
    pub fn get(&self, day: Day) -> Option<&T> {
        self.slots[self.slot(day)?]
            .as_ref()
            .filter(|d| d.day == day)
            .map(|d| &d.value)
    }

    /// The value of `day` if held, without making one.
    pub fn get_mut(&mut self, day: Day) -> Option<&mut T> {
        let slot = self.slot(day)?;
        self.slots[slot]
            .as_mut()
            .filter(|d| d.day == day)
            .map(|d| &mut d.value)
    }

    /// The value of `day`, made by `fresh` if its slot is empty or holds an older day;
    /// `None` if the slot holds a newer day.
    pub fn get_or_insert_with(&mut self, day: Day, fresh: impl FnOnce() -> T) -> Option<&mut T> {
        let slot = self.slot(day)?;
        let entry = &mut self.slots[slot];
        match entry.as_ref().map(|d| d.day) {
            Some(held) if held > day => None,
            Some(held) if held == day => entry.as_mut().map(|d| &mut d.value),
            _ => {
                let dated = entry.insert(Dated {
                    day,
                    value: fresh(),
                });
                Some(&mut dated.value)
            }
        }
    }

    /// Every day held and its value, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (Day, &T)> {
        self.slots.iter().flatten().map(|d| (d.day, &d.value))
    }

    /// Every day held and its value, mutably, in slot order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Day, &mut T)> {
        self.slots
            .iter_mut()
            .flatten()
            .map(|d| (d.day, &mut d.value))
    }

    /// Re-slots a restored ring for another retention: what fits stays, the oldest days
    /// beyond it are dropped. (An image that passed its checksum is trusted, but a ring it
    /// cannot have been written with is repaired rather than allowed to panic later.)
    pub fn fit(&mut self, retention_days: u32) {
        let len = retention_days as usize + 1;
        if self.slots.len() == len {
            return;
        }
        let mut held: Vec<Dated<T>> = std::mem::take(&mut self.slots)
            .into_iter()
            .flatten()
            .collect();
        held.sort_by_key(|d| d.day);
        self.slots = (0..len).map(|_| None).collect();
        for dated in held {
            if let Some(slot) = self.slot(dated.day) {
                self.slots[slot] = Some(dated);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_come_round_and_never_go_back() {
        let mut ring: DayRing<u32> = DayRing::new(2);
        *ring.get_or_insert_with(10, || 0).unwrap() += 1;
        *ring.get_or_insert_with(11, || 0).unwrap() += 1;
        assert_eq!(ring.get(10), Some(&1));
        // Day 13 takes day 10's slot; day 10 is gone and cannot come back.
        *ring.get_or_insert_with(13, || 5).unwrap() += 1;
        assert_eq!(ring.get(10), None);
        assert_eq!(ring.get(13), Some(&6));
        assert!(ring.get_or_insert_with(10, || 0).is_none());
        assert_eq!(ring.get_mut(12), None);
        ring.fit(4);
        assert_eq!(ring.get(13), Some(&6));
        assert_eq!(ring.get(11), Some(&1));
        ring.fit(0);
        assert_eq!(ring.iter().collect::<Vec<_>>(), [(13, &6)]);
        let mut none: DayRing<u32> = DayRing::default();
        assert!(none.get_or_insert_with(1, || 0).is_none());
        none.fit(1);
        assert!(none.get_or_insert_with(1, || 0).is_some());
    }
}
