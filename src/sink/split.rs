//! Splitting one window into size-bounded requests: a greedy, order-keeping packing of series.
//!
//! Invariants: every series lands in exactly one chunk, chunks are contiguous and in order, a chunk's
//! estimated size (`fixed` + its items' costs) never exceeds the limit, except a chunk holding a single
//! item that alone exceeds it (flagged `oversized`: better one big request than a lost series; the
//! receiver may answer 413, which is then a permanent, dead-lettered failure).

use std::ops::Range;

/// One request's share of the window: a contiguous run of items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub range: Range<usize>,
    /// Estimated encoded size of the whole request.
    pub bytes: usize,
    /// A single item larger than the limit.
    pub oversized: bool,
}

/// Packs items `0..n` into chunks of at most `max` bytes. `fixed` is every request's overhead;
/// `cost(i, first_in_chunk)` is item `i`'s size, where `first_in_chunk` lets a caller charge a
/// per-request header (an OTLP `Metric` wrapper) to the item that opens a chunk.
pub(crate) fn pack(
    n: usize,
    fixed: usize,
    max: usize,
    mut cost: impl FnMut(usize, bool) -> usize,
) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut bytes = fixed;
    for i in 0..n {
        let first = i == start;
        let c = cost(i, first);
        if !first && bytes.saturating_add(c) > max {
            chunks.push(Chunk {
                range: start..i,
                bytes,
                oversized: false,
            });
            start = i;
            bytes = fixed.saturating_add(cost(i, true));
        } else {
            bytes = bytes.saturating_add(c);
        }
    }
    if start < n {
        chunks.push(Chunk {
            range: start..n,
            bytes,
            oversized: false,
        });
    }
    for chunk in &mut chunks {
        chunk.oversized = chunk.bytes > max;
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ranges(chunks: &[Chunk]) -> Vec<Range<usize>> {
        chunks.iter().map(|c| c.range.clone()).collect()
    }

    #[test]
    fn packs_greedily_in_order() {
        let sizes = [3, 3, 3, 5, 1, 10];
        let chunks = pack(sizes.len(), 1, 8, |i, _| sizes[i]);
        assert_eq!(ranges(&chunks), vec![0..2, 2..3, 3..5, 5..6]);
        assert_eq!(
            chunks
                .iter()
                .map(|c| (c.bytes, c.oversized))
                .collect::<Vec<_>>(),
            vec![(7, false), (4, false), (7, false), (11, true)]
        );
    }

    #[test]
    fn empty_window_has_no_chunks() {
        assert!(pack(0, 10, 100, |_, _| 1).is_empty());
    }

    #[test]
    fn opener_cost_is_charged_to_the_first_item_of_each_chunk() {
        // Item cost 2, plus 3 when it opens a chunk: [5,2,2] = 9 fits 9, the 4th opens a new chunk.
        let chunks = pack(4, 0, 9, |_, first| if first { 5 } else { 2 });
        assert_eq!(ranges(&chunks), vec![0..3, 3..4]);
        assert_eq!(chunks[1].bytes, 5);
    }

    proptest! {
        #[test]
        fn chunks_cover_everything_in_order_within_the_limit(
            sizes in proptest::collection::vec(0usize..300, 0..60),
            fixed in 0usize..20,
            max in 1usize..400,
        ) {
            let chunks = pack(sizes.len(), fixed, max, |i, _| sizes[i]);
            let mut next = 0;
            for c in &chunks {
                prop_assert_eq!(c.range.start, next);
                prop_assert!(c.range.end > c.range.start);
                next = c.range.end;
                let bytes = fixed + sizes[c.range.clone()].iter().sum::<usize>();
                prop_assert_eq!(c.bytes, bytes);
                prop_assert_eq!(c.oversized, bytes > max);
                if c.oversized {
                    prop_assert_eq!(c.range.len(), 1);
                }
            }
            prop_assert_eq!(next, sizes.len());
            // Greedy: no chunk could have taken the next chunk's first item.
            for w in chunks.windows(2) {
                prop_assert!(w[0].bytes + sizes[w[1].range.start] > max);
            }
        }
    }
}
