//! A copy-on-write view of `wal.redb`, for the `adxexporter wal` reports: redb opens it as a
//! writable database, so that it runs the integrity check a writable open runs (every page checksum
//! of the committed trees verified, a crash's leftovers repaired, as `run` does on start), while
//! everything redb writes lands in memory. The file itself is only ever read.
//!
//! It takes no file lock (redb then opens without one): the caller holds redb's reader lock on the
//! same file through a read-only handle for as long as the view lives.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Mutex, MutexGuard};

use redb::StorageBackend;

/// Granularity of the in-memory copies: redb's page size.
const BLOCK: u64 = 4096;

pub(super) struct FileView {
    file: File,
    state: Mutex<ViewState>,
}

struct ViewState {
    /// Length of the view.
    len: u64,
    /// Bytes of the file the view still shows: a shrink hides the rest for good (regrown bytes read
    /// as zeros, as a backend must).
    base_len: u64,
    /// Blocks redb wrote, by index, each `BLOCK` bytes; bytes past `len` are zero.
    blocks: BTreeMap<u64, Box<[u8]>>,
}

impl FileView {
    pub(super) fn new(file: File) -> io::Result<FileView> {
        let len = file.metadata()?.len();
        Ok(FileView {
            file,
            state: Mutex::new(ViewState {
                len,
                base_len: len,
                blocks: BTreeMap::new(),
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, ViewState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// File bytes at `offset`, zeros past `base_len`.
    fn read_base(&self, base_len: u64, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let shown = base_len.saturating_sub(offset).min(out.len() as u64) as usize;
        self.file.read_exact_at(&mut out[..shown], offset)?;
        out[shown..].fill(0);
        Ok(())
    }
}

impl std::fmt::Debug for FileView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        f.debug_struct("FileView")
            .field("len", &state.len)
            .field("copied_blocks", &state.blocks.len())
            .finish()
    }
}

impl StorageBackend for FileView {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.state().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let state = self.state();
        let end = offset
            .checked_add(out.len() as u64)
            .filter(|end| *end <= state.len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
        let mut pos = offset;
        while pos < end {
            let at = (pos - offset) as usize;
            let block = pos / BLOCK;
            match state.blocks.range(block..).next() {
                Some((&index, copy)) if index == block => {
                    let within = (pos % BLOCK) as usize;
                    let n = (BLOCK - pos % BLOCK).min(end - pos) as usize;
                    out[at..at + n].copy_from_slice(&copy[within..within + n]);
                    pos += n as u64;
                }
                next => {
                    // Up to the next copied block (or the end) straight from the file, in one read.
                    let until = next.map_or(end, |(&index, _)| (index * BLOCK).min(end));
                    let n = (until - pos) as usize;
                    self.read_base(state.base_len, pos, &mut out[at..at + n])?;
                    pos = until;
                }
            }
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut state = self.state();
        if len < state.len {
            let kept = len.div_ceil(BLOCK);
            state.blocks.split_off(&kept);
            if !len.is_multiple_of(BLOCK)
                && let Some(last) = state.blocks.get_mut(&(len / BLOCK))
            {
                last[(len % BLOCK) as usize..].fill(0);
            }
            state.base_len = state.base_len.min(len);
        }
        state.len = len;
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut state = self.state();
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "write past u64"))?;
        let mut pos = offset;
        while pos < end {
            let block = pos / BLOCK;
            let within = (pos % BLOCK) as usize;
            let n = (BLOCK - pos % BLOCK).min(end - pos) as usize;
            if !state.blocks.contains_key(&block) {
                let mut copy = vec![0; BLOCK as usize].into_boxed_slice();
                self.read_base(state.base_len, block * BLOCK, &mut copy)?;
                state.blocks.insert(block, copy);
            }
            let at = (pos - offset) as usize;
            if let Some(copy) = state.blocks.get_mut(&block) {
                copy[within..within + n].copy_from_slice(&data[at..at + n]);
            }
            pos += n as u64;
        }
        state.len = state.len.max(end);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view_of(bytes: &[u8]) -> (tempfile::NamedTempFile, FileView) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        let view = FileView::new(File::open(file.path()).unwrap()).unwrap();
        (file, view)
    }

    fn read(view: &FileView, offset: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0xee; len];
        view.read(offset, &mut out).unwrap();
        out
    }

    #[test]
    fn writes_stay_in_memory_and_reads_see_them() {
        let original: Vec<u8> = (0..3 * BLOCK + 100).map(|i| (i % 251) as u8).collect();
        let (file, view) = view_of(&original);
        view.write(BLOCK - 2, &[1, 2, 3, 4]).unwrap();
        view.write(2 * BLOCK + 10, &[9; 5]).unwrap();
        let mut expected = original.clone();
        expected[BLOCK as usize - 2..BLOCK as usize + 2].copy_from_slice(&[1, 2, 3, 4]);
        expected[2 * BLOCK as usize + 10..2 * BLOCK as usize + 15].copy_from_slice(&[9; 5]);
        assert_eq!(read(&view, 0, expected.len()), expected);
        assert_eq!(
            read(&view, BLOCK - 3, 6),
            expected[BLOCK as usize - 3..][..6]
        );
        assert!(view.read(1, &mut vec![0; expected.len()]).is_err());
        assert_eq!(std::fs::read(file.path()).unwrap(), original);
    }

    #[test]
    fn shrinking_hides_the_file_tail_and_growing_reads_zeros() {
        let original = vec![7u8; 2 * BLOCK as usize];
        let (file, view) = view_of(&original);
        view.write(BLOCK + 5, &[1; 10]).unwrap();
        view.set_len(BLOCK + 8).unwrap();
        assert_eq!(view.len().unwrap(), BLOCK + 8);
        view.set_len(3 * BLOCK).unwrap();
        let got = read(&view, 0, 3 * BLOCK as usize);
        assert!(got[..BLOCK as usize + 5].iter().all(|b| *b == 7));
        assert_eq!(got[BLOCK as usize + 5..BLOCK as usize + 8], [1, 1, 1]);
        assert!(got[BLOCK as usize + 8..].iter().all(|b| *b == 0));
        view.write(3 * BLOCK, &[4; 3]).unwrap();
        assert_eq!(view.len().unwrap(), 3 * BLOCK + 3);
        assert_eq!(std::fs::read(file.path()).unwrap(), original);
    }
}
