//! Reading stored records back: each document stores one field, `doc`, the record's canonical
//! JSON. Read straight out of the document store's bytes where the layout is the one the indexer
//! writes (tantivy's own decoding copies a bytes value one byte at a time), else through tantivy.

use super::error::IndexError;
use super::schema::Fields;
use codestax_common::AuditRecord;
use std::collections::HashMap;
use std::path::Path;
use tantivy::schema::{Field, Value};
use tantivy::store::StoreReader;
use tantivy::{DocAddress, Searcher, SegmentOrdinal, TantivyDocument};

/// Reads a stored record.
pub(crate) fn load(
    searcher: &Searcher,
    dir: &Path,
    fields: &Fields,
    addr: DocAddress,
) -> Result<AuditRecord, IndexError> {
    load_with(searcher, dir, fields, addr, |dir, bytes| {
        serde_json::from_slice(bytes).map_err(|e| corrupt(dir, e))
    })
}

/// Reads the stored records of one searcher, many at a time.
///
/// tantivy's own document reader copies a bytes value one byte at a time (a quarter of a deep
/// walk's time); this reads a document's serialised bytes from the segment's store and takes
/// the one stored field, `doc`, straight out of them. A document it does not recognise (a future
/// tantivy with another layout) is read the slow way.
pub(crate) struct StoredDocs<'a> {
    searcher: &'a Searcher,
    dir: &'a Path,
    fields: &'a Fields,
    stores: HashMap<SegmentOrdinal, StoreReader>,
    pub(crate) fast_reads: usize,
}

/// Decompressed doc-store blocks a [`StoredDocs`] keeps per segment: the entries of a page lie
/// in a run of consecutive blocks.
const PAGE_STORE_CACHE_BLOCKS: usize = 4;

impl<'a> StoredDocs<'a> {
    pub(crate) fn new(searcher: &'a Searcher, dir: &'a Path, fields: &'a Fields) -> Self {
        StoredDocs {
            searcher,
            dir,
            fields,
            stores: HashMap::new(),
            fast_reads: 0,
        }
    }

    pub(crate) fn read<E>(
        &mut self,
        addr: DocAddress,
        decode: impl FnOnce(&Path, &[u8]) -> Result<E, IndexError>,
    ) -> Result<E, IndexError> {
        let store = match self.stores.entry(addr.segment_ord) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(
                self.searcher
                    .segment_reader(addr.segment_ord)
                    .get_store_reader(PAGE_STORE_CACHE_BLOCKS)
                    .map_err(|e| IndexError::tantivy(self.dir, "open the doc store", e.into()))?,
            ),
        };
        let raw = store
            .get_document_bytes(addr.doc_id)
            .map_err(|e| IndexError::tantivy(self.dir, "read a stored record", e))?;
        match stored_bytes(&raw, self.fields.doc) {
            Some(bytes) => {
                self.fast_reads += 1;
                decode(self.dir, bytes)
            }
            None => load_with(self.searcher, self.dir, self.fields, addr, decode),
        }
    }
}

/// Reads a stored record's canonical JSON and decodes it with `decode`.
fn load_with<E>(
    searcher: &Searcher,
    dir: &Path,
    fields: &Fields,
    addr: DocAddress,
    decode: impl FnOnce(&Path, &[u8]) -> Result<E, IndexError>,
) -> Result<E, IndexError> {
    let doc: TantivyDocument = searcher
        .doc(addr)
        .map_err(|e| IndexError::tantivy(dir, "read a stored record", e))?;
    let bytes = doc
        .get_first(fields.doc)
        .and_then(|v| v.as_bytes())
        .ok_or_else(|| IndexError::Corrupt {
            path: dir.to_path_buf(),
            message: "a document has no stored record".into(),
        })?;
    decode(dir, bytes)
}

pub(crate) fn corrupt(dir: &Path, e: impl std::fmt::Display) -> IndexError {
    IndexError::Corrupt {
        path: dir.to_path_buf(),
        message: e.to_string(),
    }
}

/// tantivy's type code of a bytes value in a stored document.
const BYTES_CODE: u8 = 4;

/// The value of `field` in a stored document as tantivy's document store holds it, when the
/// document is exactly what the indexer stores — one field, `field`, holding bytes:
/// `VInt(1)`, the field id (`u32`, little-endian), [`BYTES_CODE`], `VInt(len)`, the bytes.
/// `None` for anything else. (tantivy's own decoding reads a bytes value one byte at a time; at
/// some 700 bytes a record that was a sixth of an export's CPU.)
pub(crate) fn stored_bytes(raw: &[u8], field: Field) -> Option<&[u8]> {
    let (fields, rest) = vint(raw)?;
    let (id, rest) = rest.split_first_chunk::<4>()?;
    let (&code, rest) = rest.split_first()?;
    let (len, rest) = vint(rest)?;
    (fields == 1
        && u32::from_le_bytes(*id) == field.field_id()
        && code == BYTES_CODE
        && len == rest.len() as u64)
        .then_some(rest)
}

/// tantivy's variable-length integer: 7 bits a byte, least significant first, the last byte
/// marked by its high bit.
fn vint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 != 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}
