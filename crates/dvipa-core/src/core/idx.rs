//! Typed indexes: a [`TargetId`] picks a stack, a [`SwitchIdx`] a switch, a [`VipaIdx`] a
//! DVIPA, each only in its own [`IdVec`] (no raw `usize` or `id - 1` arithmetic at the call
//! sites).

use std::marker::PhantomData;

/// A typed index into an [`IdVec`].
pub(crate) trait Idx: Copy {
    /// Position in the vector.
    fn index(self) -> usize;
    /// The index of position `i`.
    fn from_index(i: usize) -> Self;
}

/// A target id: `1 + index` of `[[stack]]`, the switch's `target_id` (0 = no target).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetId(pub u16);

impl Idx for TargetId {
    fn index(self) -> usize {
        usize::from(self.0) - 1
    }
    fn from_index(i: usize) -> Self {
        // the core refuses more than u16::MAX - 1 stacks
        TargetId(i as u16 + 1)
    }
}

/// A switch: its index in `[[switch]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SwitchIdx(pub(crate) usize);

/// A DVIPA: its index in [`crate::config::Cluster::vipas`] (the effective VIPA list; VIPARANGE
/// DVIPAs are appended when they become active).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct VipaIdx(pub(crate) usize);

impl Idx for SwitchIdx {
    fn index(self) -> usize {
        self.0
    }
    fn from_index(i: usize) -> Self {
        SwitchIdx(i)
    }
}

impl Idx for VipaIdx {
    fn index(self) -> usize {
        self.0
    }
    fn from_index(i: usize) -> Self {
        VipaIdx(i)
    }
}

/// A vector indexed by `I` only.
#[derive(Debug)]
pub(crate) struct IdVec<I, T> {
    items: Vec<T>,
    _index: PhantomData<fn(I)>,
}

impl<I: Idx, T> IdVec<I, T> {
    /// Wraps `items` (position `i` is `I::from_index(i)`).
    pub(crate) fn new(items: Vec<T>) -> Self {
        IdVec {
            items,
            _index: PhantomData,
        }
    }

    /// Every index, in order (does not borrow the vector).
    pub(crate) fn ids(&self) -> impl Iterator<Item = I> + use<I, T> {
        (0..self.items.len()).map(I::from_index)
    }
}

impl<I: Idx, T> std::ops::Index<I> for IdVec<I, T> {
    type Output = T;
    fn index(&self, i: I) -> &T {
        &self.items[i.index()]
    }
}

impl<I: Idx, T> std::ops::IndexMut<I> for IdVec<I, T> {
    fn index_mut(&mut self, i: I) -> &mut T {
        &mut self.items[i.index()]
    }
}

impl<I, T> std::ops::Deref for IdVec<I, T> {
    type Target = Vec<T>;
    fn deref(&self) -> &Vec<T> {
        &self.items
    }
}

impl<I, T> std::ops::DerefMut for IdVec<I, T> {
    fn deref_mut(&mut self) -> &mut Vec<T> {
        &mut self.items
    }
}

impl<'a, I, T> IntoIterator for &'a mut IdVec<I, T> {
    type Item = &'a mut T;
    type IntoIter = std::slice::IterMut<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter_mut()
    }
}
