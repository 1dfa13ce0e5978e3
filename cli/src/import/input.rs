//! Reading an import's input one record at a time, in bounded memory, each record with the line
//! it starts on and the byte offset just past it (what a checkpoint resumes from).
//!
//! - NDJSON: one record per line (an export's or an emit file's); blank lines and the export's
//!   last `{"codestax_proof": …}` line are passed over.
//! - JSON: this project's JSON export (`{"records": [...], "manifest": …, "proof": …}`: only the
//!   elements of `records` are read, the other members are skipped unread) or a plain array.
//!   Elements are cut out by a small scanner (strings, escapes, nesting), never parsed here: the
//!   collector parses and names what is wrong.

use std::io::{self, BufRead};

/// An element larger than this is not sent: the collector's record limit is far below it.
pub const MAX_ELEMENT_BYTES: usize = 1024 * 1024;

/// What an input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputFormat {
    Ndjson,
    Json,
}

/// One record of the input, as bytes on one line.
#[derive(Debug, Default)]
pub struct Element {
    /// The 1-based line of the input it starts on.
    pub line: u64,
    /// The byte offset of the input just past it.
    pub end: u64,
    /// Its JSON on one line; empty when it was over [`MAX_ELEMENT_BYTES`] (`oversize` then says
    /// how large it was).
    pub bytes: Vec<u8>,
    pub oversize: Option<u64>,
}

/// Where a reader stands: the byte offset and the line at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub offset: u64,
    pub line: u64,
}

/// Reads records from `R`.
pub struct Reader<R> {
    input: R,
    format: InputFormat,
    at: Position,
    /// JSON: where the scanner stands.
    state: JsonState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonState {
    /// Before the top-level value.
    Start,
    /// Inside the array of records, before an element (or a `,`, or the closing `]`).
    InArray,
    Done,
}

/// Why the input cannot be read on.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("reading the input: {0}")]
    Io(#[from] io::Error),
    /// The JSON's structure is not an export or an array; the line names where.
    #[error("line {line}: {message}")]
    Shape { line: u64, message: String },
}

impl<R: BufRead> Reader<R> {
    /// A reader of `input` from its start.
    pub fn new(input: R, format: InputFormat) -> Reader<R> {
        Reader {
            input,
            format,
            at: Position { offset: 0, line: 1 },
            state: JsonState::Start,
        }
    }

    /// A reader of `input` already moved to `at`, a position a checkpoint recorded: just past
    /// a record (inside the array, for JSON).
    pub fn resumed(input: R, format: InputFormat, at: Position) -> Reader<R> {
        let state = if at.offset == 0 {
            JsonState::Start
        } else {
            JsonState::InArray
        };
        Reader {
            input,
            format,
            at,
            state,
        }
    }

    pub fn position(&self) -> Position {
        self.at
    }

    /// The next record into `out`; `false` at the end of the input.
    pub fn next_into(&mut self, out: &mut Element) -> Result<bool, InputError> {
        out.bytes.clear();
        out.oversize = None;
        match self.format {
            InputFormat::Ndjson => self.next_line(out),
            InputFormat::Json => self.next_element(out),
        }
    }

    fn next_line(&mut self, out: &mut Element) -> Result<bool, InputError> {
        loop {
            let line = self.at.line;
            let (n, size) = read_line_bounded(&mut self.input, &mut out.bytes)?;
            if n == 0 {
                return Ok(false);
            }
            self.at.offset += n as u64;
            self.at.line += 1;
            while matches!(out.bytes.last(), Some(b'\n' | b'\r')) {
                out.bytes.pop();
            }
            if size > MAX_ELEMENT_BYTES as u64 {
                out.bytes.clear();
                out.oversize = Some(size);
            } else if out.bytes.iter().all(u8::is_ascii_whitespace) || is_proof_line(&out.bytes) {
                out.bytes.clear();
                continue;
            }
            out.line = line;
            out.end = self.at.offset;
            return Ok(true);
        }
    }

    fn next_element(&mut self, out: &mut Element) -> Result<bool, InputError> {
        loop {
            match self.state {
                JsonState::Done => return Ok(false),
                JsonState::Start => {
                    match self.skip_whitespace()? {
                        Some(b'[') => self.bump(b'['),
                        Some(b'{') => {
                            self.bump(b'{');
                            self.find_records()?;
                        }
                        other => return Err(self.shape(expected_top(other))),
                    }
                    self.state = JsonState::InArray;
                }
                JsonState::InArray => match self.skip_whitespace()? {
                    Some(b',') => self.bump(b','),
                    Some(b']') => {
                        // The rest (an export's manifest and proof) is not needed.
                        self.bump(b']');
                        self.state = JsonState::Done;
                    }
                    Some(_) => {
                        out.line = self.at.line;
                        let size = self.take_value(Some(&mut out.bytes))?;
                        if size > MAX_ELEMENT_BYTES as u64 {
                            out.bytes.clear();
                            out.oversize = Some(size);
                        }
                        out.end = self.at.offset;
                        return Ok(true);
                    }
                    None => {
                        return Err(self.shape("the input ends inside the array of records".into()));
                    }
                },
            }
        }
    }

    /// Inside the top-level object: skips members up to the value of `records`, and its `[`.
    fn find_records(&mut self) -> Result<(), InputError> {
        loop {
            match self.skip_whitespace()? {
                Some(b',') => self.bump(b','),
                Some(b'"') => {
                    let mut key = Vec::new();
                    self.take_value(Some(&mut key))?;
                    if self.skip_whitespace()? != Some(b':') {
                        return Err(self.shape(format!(
                            "expected ':' after the key {}",
                            String::from_utf8_lossy(&key)
                        )));
                    }
                    self.bump(b':');
                    if key == b"\"records\"" {
                        return match self.skip_whitespace()? {
                            Some(b'[') => {
                                self.bump(b'[');
                                Ok(())
                            }
                            _ => Err(self.shape("\"records\" is not an array".into())),
                        };
                    }
                    self.skip_whitespace()?;
                    self.take_value(None)?;
                }
                _ => {
                    return Err(self.shape(
                        "the object has no \"records\" array: not an export of this project".into(),
                    ));
                }
            }
        }
    }

    /// Reads one JSON value (an object, array, string or scalar), copying its bytes into `out`
    /// up to [`MAX_ELEMENT_BYTES`] with line breaks as spaces (outside strings they are
    /// whitespace; inside one they are invalid either way). Returns its size.
    fn take_value(&mut self, mut out: Option<&mut Vec<u8>>) -> Result<u64, InputError> {
        let start_line = self.at.line;
        let mut size = 0u64;
        // `None` before the first byte; `Some(true)` for a string, object or array (it ends
        // with its closing byte), `Some(false)` for a scalar (it ends before a delimiter).
        let mut nested: Option<bool> = None;
        let mut depth = 0u32;
        let mut in_string = false;
        let mut escaped = false;
        loop {
            let buf = self.input.fill_buf()?;
            if buf.is_empty() {
                if nested == Some(false) {
                    return Ok(size);
                }
                return Err(InputError::Shape {
                    line: start_line,
                    message: "the input ends inside this value".into(),
                });
            }
            let mut used = 0;
            let mut finished = false;
            for &b in buf {
                if nested == Some(false)
                    && (matches!(b, b',' | b']' | b'}') || b.is_ascii_whitespace())
                {
                    finished = true;
                    break;
                }
                used += 1;
                size += 1;
                if b == b'\n' {
                    self.at.line += 1;
                }
                if let Some(out) = out.as_deref_mut()
                    && out.len() <= MAX_ELEMENT_BYTES
                {
                    out.push(if b == b'\n' || b == b'\r' { b' ' } else { b });
                }
                if in_string {
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_string = false;
                    }
                } else {
                    match b {
                        b'"' => in_string = true,
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => depth = depth.saturating_sub(1),
                        _ => {}
                    }
                }
                if nested.is_none() {
                    nested = Some(in_string || depth > 0);
                }
                if nested == Some(true) && depth == 0 && !in_string {
                    finished = true;
                    break;
                }
            }
            self.input.consume(used);
            self.at.offset += used as u64;
            if finished {
                return Ok(size);
            }
        }
    }

    /// The next byte that is not whitespace, left unread; `None` at the end.
    fn skip_whitespace(&mut self) -> Result<Option<u8>, InputError> {
        loop {
            let buf = self.input.fill_buf()?;
            if buf.is_empty() {
                return Ok(None);
            }
            let mut used = 0;
            for &b in buf {
                if !b.is_ascii_whitespace() {
                    self.input.consume(used);
                    self.at.offset += used as u64;
                    return Ok(Some(b));
                }
                if b == b'\n' {
                    self.at.line += 1;
                }
                used += 1;
            }
            self.input.consume(used);
            self.at.offset += used as u64;
        }
    }

    /// Passes the byte `skip_whitespace` returned.
    fn bump(&mut self, _b: u8) {
        self.input.consume(1);
        self.at.offset += 1;
    }

    fn shape(&self, message: String) -> InputError {
        InputError::Shape {
            line: self.at.line,
            message,
        }
    }
}

fn expected_top(found: Option<u8>) -> String {
    match found {
        None => "the input is empty: expected a JSON export or an array of records".into(),
        Some(b) => format!(
            "expected a JSON export ({{\"records\": [...]}}) or an array of records, found {:?}",
            b as char
        ),
    }
}

/// Whether a line is an NDJSON export's proof line.
fn is_proof_line(line: &[u8]) -> bool {
    let trimmed = line.trim_ascii_start();
    trimmed
        .strip_prefix(b"{")
        .is_some_and(|rest| rest.trim_ascii_start().starts_with(b"\"codestax_proof\""))
}

/// Reads one line (with its `\n`) into `out`, keeping at most [`MAX_ELEMENT_BYTES`] + 2 bytes of
/// it; returns the bytes consumed and the line's length without its line break.
fn read_line_bounded(input: &mut impl BufRead, out: &mut Vec<u8>) -> io::Result<(usize, u64)> {
    let mut consumed = 0usize;
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            let size = consumed as u64;
            return Ok((consumed, size));
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let room = (MAX_ELEMENT_BYTES + 2).saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let n = chunk.len();
        input.consume(n);
        consumed += n;
        if done {
            return Ok((consumed, consumed as u64 - 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read_all(text: &str, format: InputFormat) -> Result<Vec<(u64, u64, String)>, InputError> {
        let mut reader = Reader::new(text.as_bytes(), format);
        let mut e = Element::default();
        let mut out = Vec::new();
        while reader.next_into(&mut e)? {
            out.push((e.line, e.end, String::from_utf8(e.bytes.clone()).unwrap()));
        }
        Ok(out)
    }

    #[test]
    fn ndjson_skips_blank_and_proof_lines() {
        let text = "{\"id\":\"a\"}\n\n{\"id\":\"b\"}\r\n{\"codestax_proof\": {}}\n";
        let got = read_all(text, InputFormat::Ndjson).unwrap();
        assert_eq!(
            got,
            vec![
                (1, 11, "{\"id\":\"a\"}".into()),
                (3, 24, "{\"id\":\"b\"}".into())
            ]
        );
    }

    #[test]
    fn json_export_reads_records_only() {
        let text = "{\"format\": \"codestax-export/2\",\n \"records\": [\n  {\"id\": \"a\",\n   \"m\": \"x]}\\\"\"},\n  {\"id\": \"b\"}\n ],\n \"manifest\": \"m\", \"proof\": {\"p\": [1]}}";
        let got = read_all(text, InputFormat::Json).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, 3);
        assert_eq!(got[0].2, "{\"id\": \"a\",    \"m\": \"x]}\\\"\"}");
        assert_eq!(got[1].0, 5);
        assert_eq!(got[1].2, "{\"id\": \"b\"}");
        // Resuming past the first element reads the second only.
        let at = Position {
            offset: got[0].1,
            line: 4,
        };
        let mut reader = Reader::resumed(
            &text.as_bytes()[at.offset as usize..],
            InputFormat::Json,
            at,
        );
        let mut e = Element::default();
        assert!(reader.next_into(&mut e).unwrap());
        assert_eq!((e.line, &e.bytes[..]), (5, &b"{\"id\": \"b\"}"[..]));
        assert!(!reader.next_into(&mut e).unwrap());
    }

    #[test]
    fn json_array_and_scalars() {
        let got = read_all(" [ {\"a\":[1,{}]} , 7 , \"s\" ] ", InputFormat::Json).unwrap();
        let values: Vec<_> = got.iter().map(|g| g.2.as_str()).collect();
        assert_eq!(values, ["{\"a\":[1,{}]}", "7", "\"s\""]);
        assert!(read_all("{\"format\": 1}", InputFormat::Json).is_err());
        assert!(read_all("[{\"a\": 1", InputFormat::Json).is_err());
        assert!(read_all("", InputFormat::Json).is_err());
    }

    proptest! {
        /// Whatever the bytes, the reader ends (record, error or end) and never panics; every
        /// element it cuts out of a valid array is one of the array's values.
        #[test]
        fn any_bytes_end_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            for format in [InputFormat::Json, InputFormat::Ndjson] {
                let mut reader = Reader::new(&bytes[..], format);
                let mut e = Element::default();
                let mut n = 0;
                while let Ok(true) = reader.next_into(&mut e) {
                    n += 1;
                    prop_assert!(n <= bytes.len() + 1);
                }
            }
        }

        #[test]
        fn arrays_of_values_come_back_whole(values in proptest::collection::vec(
            prop_oneof![
                any::<i64>().prop_map(|n| serde_json::json!(n)),
                ".{0,12}".prop_map(|s| serde_json::json!({"id": s, "n": [1, {"x": s}]})),
                ".{0,12}".prop_map(|s| serde_json::json!(s)),
            ], 0..8),
            pretty in any::<bool>())
        {
            let array = serde_json::Value::Array(values.clone());
            let text = if pretty {
                serde_json::to_string_pretty(&serde_json::json!({"records": array, "proof": {"a": "]"}})).unwrap()
            } else {
                serde_json::to_string(&array).unwrap()
            };
            let got = read_all(&text, InputFormat::Json).unwrap();
            let parsed: Vec<serde_json::Value> = got
                .iter()
                .map(|g| serde_json::from_str(&g.2).unwrap())
                .collect();
            prop_assert_eq!(parsed, values);
        }
    }
}
