//! Handing a pack stream to libgit2's indexer (an `OdbPackwriter`) in large
//! pieces. The indexer maps the pack anew for every append, so appending
//! object by object (10,000 appends for a tree of small files) cost an
//! mmap, a munmap and two writes per object.

use std::io::Write;

use anyhow::{Context as _, Result};
use git2::{Odb, OdbPackwriter};

/// Bytes handed to the indexer at a time.
const CHUNK: usize = 1 << 20;

pub struct Feed<'a> {
    writer: OdbPackwriter<'a>,
    buf: Vec<u8>,
}

impl<'a> Feed<'a> {
    /// A new pack in `odb`, indexed as it is written.
    pub fn new(odb: &'a Odb) -> Result<Feed<'a>> {
        Ok(Feed {
            writer: odb.packwriter()?,
            buf: Vec::with_capacity(CHUNK + 64 * 1024),
        })
    }

    pub fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.writer
            .write_all(&self.buf)
            .context("cannot write pack")?;
        self.buf.clear();
        Ok(())
    }

    /// Writes what is left and indexes the pack; the stream must be
    /// complete (trailing checksum included).
    pub fn commit(mut self) -> Result<()> {
        self.flush()?;
        self.writer.commit().context("cannot index pack")?;
        Ok(())
    }
}
