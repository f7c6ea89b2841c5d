//! The frames one turn of the worker takes off a receive ring, copied
//! into one buffer that is kept from turn to turn: after the first turns
//! receiving costs a copy and no allocation.
//!
//! They are copied rather than handled in the UMEM because handling a
//! frame needs the whole runtime (`&mut`), the sockets included, while the
//! frame would still be borrowed from one of them; a copy of a first
//! packet (tens to a few thousand bytes) costs little next to simulating
//! it. The buffer holds at most one turn's frames (a ring batch), so it
//! stays as large as the largest turn.
use std::ops::Range;

#[derive(Debug, Default)]
pub struct RxBuffer {
    bytes: Vec<u8>,
    /// Each frame's bound port position and its bytes in `bytes`.
    frames: Vec<(usize, Range<usize>)>,
}

impl RxBuffer {
    /// Forgets the frames, keeps the memory.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.frames.clear();
    }

    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Adds a frame of the port at position `port`.
    pub fn push(&mut self, port: usize, frame: &[u8]) {
        self.push_with(port, |b| b.extend_from_slice(frame));
    }

    /// Adds the frame `write` appends to the buffer.
    pub fn push_with(&mut self, port: usize, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.bytes.len();
        write(&mut self.bytes);
        self.frames.push((port, start..self.bytes.len()));
    }

    /// The `k`th frame and its port position.
    pub fn frame_mut(&mut self, k: usize) -> (usize, &mut [u8]) {
        let (port, range) = self.frames[k].clone();
        (port, &mut self.bytes[range])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_back_as_pushed_and_the_memory_is_kept() {
        let mut b = RxBuffer::default();
        b.push(3, &[1, 2, 3]);
        b.push_with(5, |v| v.extend_from_slice(&[9; 70]));
        b.push(0, &[]);
        assert_eq!(b.len(), 3);
        assert_eq!(b.frame_mut(0), (3, &mut [1u8, 2, 3][..]));
        let (port, f) = b.frame_mut(1);
        assert_eq!((port, f.len()), (5, 70));
        f[0] = 7; // handled in place (a checksum completed)
        assert_eq!(b.frame_mut(1).1[0], 7);
        assert_eq!(b.frame_mut(2), (0, &mut [][..]));
        let capacity = b.bytes.capacity();
        b.clear();
        assert_eq!(b.len(), 0);
        b.push(1, &[4; 73]);
        assert_eq!(b.bytes.capacity(), capacity, "no new allocation");
        assert_eq!(b.frame_mut(0).1, &mut [4u8; 73][..]);
    }
}
