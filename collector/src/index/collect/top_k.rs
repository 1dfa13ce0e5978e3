//! [`TopK`]: the `k` largest keys of a stream, for the page collector.

use tantivy::DocId;

/// Keeps the `k` largest keys: a buffer of `2k` pruned with a linear selection, so each document
/// costs O(1) amortised and those below the running threshold are rejected at once.
pub(super) struct TopK<K: Ord + Copy> {
    pub(super) k: usize,
    buf: Vec<(K, DocId)>,
    threshold: Option<K>,
}

impl<K: Ord + Copy> TopK<K> {
    pub(super) fn new(k: usize) -> Self {
        TopK {
            k,
            buf: Vec::new(),
            threshold: None,
        }
    }

    #[inline]
    pub(super) fn push(&mut self, key: K, doc: DocId) {
        if self.k == 0 || self.threshold.is_some_and(|t| key <= t) {
            return;
        }
        self.buf.push((key, doc));
        if self.buf.len() >= 2 * self.k {
            self.prune();
        }
    }

    fn prune(&mut self) {
        let k = self.k;
        self.buf.select_nth_unstable_by(k - 1, |a, b| b.0.cmp(&a.0));
        self.buf.truncate(k);
        self.threshold = Some(self.buf[k - 1].0);
    }

    /// The `k`-th largest key so far, once there are `k`.
    pub(super) fn kth(&mut self) -> Option<K> {
        if self.k > 0 && self.buf.len() >= self.k {
            self.prune();
        }
        self.threshold
    }

    pub(super) fn into_sorted(mut self) -> Vec<(K, DocId)> {
        if self.buf.len() > self.k {
            self.prune();
        }
        self.buf.sort_unstable_by_key(|e| std::cmp::Reverse(e.0));
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_the_largest_in_order() {
        for k in [1usize, 3, 10] {
            let mut top = TopK::new(k);
            let keys: Vec<u64> = (0..200).map(|i| (i * 7919) % 211).collect();
            for (doc, key) in keys.iter().enumerate() {
                top.push(*key, doc as DocId);
            }
            let mut want = keys.clone();
            want.sort_unstable_by(|a, b| b.cmp(a));
            want.truncate(k);
            let got: Vec<u64> = top.into_sorted().into_iter().map(|(key, _)| key).collect();
            assert_eq!(got, want);
        }
        assert!(TopK::<u64>::new(0).into_sorted().is_empty());
    }
}
