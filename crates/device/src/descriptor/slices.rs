//! A list that keeps its first few items inline and only moves the rest to the heap.
//!
//! Nearly every request chain is two or three descriptors on each side (header, arguments,
//! payload), so a chain's guest-memory slices fit inline and serving a request allocates
//! nothing for them; a chain of a large READ or WRITE (one descriptor per guest page) spills.

/// Items kept inline before the list spills to the heap.
pub(super) const INLINE: usize = 8;

/// An ordered list of `T`: items `0..INLINE` inline, the rest in `spill`.
#[derive(Debug)]
pub(super) struct SliceList<T> {
    inline: [Option<T>; INLINE],
    spill: Vec<T>,
    len: usize,
}

impl<T> Default for SliceList<T> {
    fn default() -> Self {
        Self {
            inline: [const { None }; INLINE],
            spill: Vec::new(),
            len: 0,
        }
    }
}

impl<T: Clone> SliceList<T> {
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    pub(super) fn push(&mut self, item: T) {
        if self.len < INLINE {
            self.inline[self.len] = Some(item);
        } else {
            self.spill.push(item);
        }
        self.len += 1;
    }

    pub(super) fn get(&self, i: usize) -> Option<&T> {
        if i >= self.len {
            None
        } else if i < INLINE {
            self.inline[i].as_ref()
        } else {
            self.spill.get(i - INLINE)
        }
    }

    /// Replaces item `i`; does nothing past the end.
    pub(super) fn set(&mut self, i: usize, item: T) {
        if i >= self.len {
            return;
        }
        if i < INLINE {
            self.inline[i] = Some(item);
        } else if let Some(slot) = self.spill.get_mut(i - INLINE) {
            *slot = item;
        }
    }

    /// Keeps the first `n` items.
    pub(super) fn truncate(&mut self, n: usize) {
        if n >= self.len {
            return;
        }
        for slot in &mut self.inline[n.min(INLINE)..self.len.min(INLINE)] {
            *slot = None;
        }
        self.spill.truncate(n.saturating_sub(INLINE));
        self.len = n;
    }

    /// The items from index `from` on, in order.
    pub(super) fn iter_from(&self, from: usize) -> impl Iterator<Item = &T> + '_ {
        let inline_end = self.len.min(INLINE);
        let inline = &self.inline[from.min(inline_end)..inline_end];
        let spill = &self.spill[from.saturating_sub(INLINE).min(self.spill.len())..];
        inline.iter().flatten().chain(spill.iter())
    }

    fn extend(&mut self, items: impl Iterator<Item = T>) {
        for item in items {
            self.push(item);
        }
    }
}

impl<T: Clone> FromIterator<T> for SliceList<T> {
    fn from_iter<I: IntoIterator<Item = T>>(items: I) -> Self {
        let mut list = Self::default();
        list.extend(items.into_iter());
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(list: &SliceList<usize>, from: usize) -> Vec<usize> {
        list.iter_from(from).copied().collect()
    }

    #[test]
    fn behaves_as_a_vec_on_both_sides_of_the_inline_limit() {
        for n in [0, 1, INLINE - 1, INLINE, INLINE + 1, 3 * INLINE] {
            let mut list: SliceList<usize> = (0..n).collect();
            let want: Vec<usize> = (0..n).collect();
            assert_eq!(list.len(), n);
            for from in 0..=n + 1 {
                assert_eq!(items(&list, from), want[from.min(n)..], "n {n} from {from}");
            }
            for i in 0..n {
                assert_eq!(list.get(i), Some(&i));
                list.set(i, i + 100);
            }
            assert_eq!(list.get(n), None);
            list.set(n, 7);
            assert_eq!(list.len(), n);
            assert_eq!(items(&list, 0), (100..100 + n).collect::<Vec<_>>());
            for keep in (0..=n).rev() {
                list.truncate(keep);
                assert_eq!(list.len(), keep);
                assert_eq!(items(&list, 0), (100..100 + keep).collect::<Vec<_>>());
            }
            list.push(1);
            list.push(2);
            assert_eq!(items(&list, 0), [1, 2]);
        }
    }

    #[test]
    fn stays_off_the_heap_up_to_the_inline_limit() {
        let list: SliceList<usize> = (0..INLINE).collect();
        assert_eq!(list.spill.capacity(), 0);
        let list: SliceList<usize> = (0..=INLINE).collect();
        assert!(list.spill.capacity() > 0);
    }
}
