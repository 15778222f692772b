//! One sort for the crate's cold paths. Each call of the standard library's `sort*` compiles a
//! copy of its sort for that element type and comparator (~2.5-5 KB of wasm each); these
//! functions sort positions through one shared comparator type instead, then move the items
//! into place, so every caller shares one copy. A comparison costs a dynamic call: the sorts
//! that run per request over client-sized lists (the guard's spans, `normalize`'s field
//! places) keep the standard one.

use std::cmp::Ordering;

/// Sorts `items` by `compare`, stably (equal items keep their order).
pub fn sort_by<T>(items: &mut [T], mut compare: impl FnMut(&T, &T) -> Ordering) {
    if items.len() < 2 {
        return; // sorted, and no allocation (some callers sort one or two items per request)
    }
    let order = positions(items.len(), &mut |a, b| compare(&items[a], &items[b]));
    permute(items, order);
}

/// Sorts `items` by the key `key` gives each, stably.
pub fn sort_by_key<T, K: Ord>(items: &mut [T], mut key: impl FnMut(&T) -> K) {
    sort_by(items, |a, b| key(a).cmp(&key(b)));
}

/// Sorts `items` in their natural order, stably.
pub fn sort<T: Ord>(items: &mut [T]) {
    sort_by(items, T::cmp);
}

/// The positions `0..len` in sorted order; ties in their original order.
fn positions(len: usize, compare: &mut dyn FnMut(usize, usize) -> Ordering) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    order.sort_unstable_by(|&a, &b| compare(a, b).then(a.cmp(&b)));
    order
}

/// Moves `items[order[i]]` to `i`, cycle by cycle, in place (`order` marks what it placed).
fn permute<T>(items: &mut [T], mut order: Vec<usize>) {
    for start in 0..order.len() {
        let mut at = start;
        // Position `at` takes the item at `order[at]`; the item that was at `start` travels
        // along the cycle until the position that takes it.
        while order[at] != at {
            let from = order[at];
            order[at] = at;
            if from == start {
                break;
            }
            items.swap(at, from);
            at = from;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_like_the_standard_stable_sort() {
        // Every permutation of a small list with ties, and a longer scrambled one.
        let mut cases: Vec<Vec<(u8, usize)>> = Vec::new();
        let base = [3u8, 1, 2, 1, 3, 0];
        let mut index = [0usize, 1, 2, 3, 4, 5];
        permutations(&mut index, 0, &mut |p| cases.push(p.iter().map(|&i| (base[i], i)).collect()));
        cases.push((0..500).map(|i| ((i * 7919 % 97) as u8, i)).collect());
        for case in cases {
            let mut ours = case.clone();
            sort_by_key(&mut ours, |&(k, _)| k);
            let mut std = case.clone();
            std.sort_by_key(|&(k, _)| k);
            assert_eq!(ours, std, "from {case:?}");
        }
    }

    #[test]
    fn sorts_owned_values_without_copying_them() {
        let mut names: Vec<String> = ["delta", "alpha", "charlie", "bravo", "alpha"].map(String::from).to_vec();
        sort(&mut names);
        assert_eq!(names, ["alpha", "alpha", "bravo", "charlie", "delta"]);
        let mut empty: Vec<String> = Vec::new();
        sort(&mut empty);
        assert!(empty.is_empty());
        let mut reversed: Vec<u32> = (0..64).rev().collect();
        sort_by(&mut reversed, |a, b| b.cmp(a));
        assert_eq!(reversed, (0..64).rev().collect::<Vec<_>>());
        sort(&mut reversed);
        assert_eq!(reversed, (0..64).collect::<Vec<_>>());
    }

    fn permutations(p: &mut [usize; 6], k: usize, out: &mut dyn FnMut(&[usize; 6])) {
        if k == p.len() {
            out(p);
            return;
        }
        for i in k..p.len() {
            p.swap(k, i);
            permutations(p, k + 1, out);
            p.swap(k, i);
        }
    }
}
