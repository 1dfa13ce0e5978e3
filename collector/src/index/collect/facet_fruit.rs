//! [`FacetFruit`]: facet counts of one segment or many, merged.

use std::collections::HashMap;

#[derive(Debug, Default)]
pub(crate) struct FacetFruit {
    pub count: u64,
    pub values: [HashMap<String, u64>; 5],
    /// Start of the hour (microseconds) → count.
    pub hours: HashMap<i64, u64>,
    pub min_time: Option<i64>,
    pub max_time: Option<i64>,
}

impl FacetFruit {
    pub fn merge(&mut self, other: &FacetFruit) {
        self.count += other.count;
        for (mine, theirs) in self.values.iter_mut().zip(&other.values) {
            for (v, c) in theirs {
                match mine.get_mut(v) {
                    Some(n) => *n += c,
                    None => {
                        mine.insert(v.clone(), *c);
                    }
                }
            }
        }
        for (h, c) in &other.hours {
            *self.hours.entry(*h).or_default() += c;
        }
        self.min_time = min_opt(self.min_time, other.min_time);
        self.max_time = max_opt(self.max_time, other.max_time);
    }

    /// Roughly the memory the fruit holds.
    pub(super) fn approx_bytes(&self) -> usize {
        let values: usize = self
            .values
            .iter()
            .flat_map(|m| m.keys())
            .map(|k| k.len() + 48)
            .sum();
        values + self.hours.len() * 32 + 160
    }
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_adds_counts_and_widens_the_time_range() {
        let mut a = FacetFruit {
            count: 2,
            min_time: Some(10),
            max_time: Some(20),
            ..FacetFruit::default()
        };
        a.values[1].insert("scan.failed".into(), 2);
        a.hours.insert(0, 2);
        let mut b = FacetFruit {
            count: 3,
            min_time: Some(5),
            max_time: Some(15),
            ..FacetFruit::default()
        };
        b.values[1].insert("scan.failed".into(), 1);
        b.values[1].insert("user.login".into(), 2);
        b.hours.insert(0, 1);
        b.hours.insert(7, 2);
        a.merge(&b);
        assert_eq!(a.count, 5);
        assert_eq!(a.values[1]["scan.failed"], 3);
        assert_eq!(a.values[1]["user.login"], 2);
        assert_eq!((a.hours[&0], a.hours[&7]), (3, 2));
        assert_eq!((a.min_time, a.max_time), (Some(5), Some(20)));
        // An empty fruit changes nothing.
        let before = (a.count, a.min_time, a.max_time);
        a.merge(&FacetFruit::default());
        assert_eq!((a.count, a.min_time, a.max_time), before);
    }
}
