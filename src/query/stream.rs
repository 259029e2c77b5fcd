//! The streaming v2 decoder (docs/design.md#kusto-streaming): the body is decoded as it arrives, so
//! what a query holds is the decoded rows plus one chunk, never the whole body beside its rows
//! (docs/design.md#memory-budget).
//!
//! A [`V2Stream`] is pushed chunks of the body ([`V2Stream::push`], or [`V2Stream::read_from`] a
//! reader) and then finished ([`V2Stream::finish`]). It walks the punctuation of the frame array,
//! of each frame object and of each `Rows` array itself, and hands every value in between — a
//! frame key, a key's value, one row — to the same serde visitors [`decode_v2`] uses
//! ([`FieldSeed`], [`RowsState::element`]), each over the bytes buffered so far. A value cut by
//! the end of the buffer is dropped whole (a row is never kept in part) and parsed again once more
//! bytes came; a value that is still incomplete is parsed again only when the buffer has doubled,
//! so even a huge one costs linear time. The buffer then holds one chunk plus the value in
//! progress: a row, or — only when a frame sends `Rows` before the `Columns`/`TableKind`/`TableId`
//! they need, which no service does — that frame's whole `Rows`.
//!
//! Invariants: the result equals [`decode_v2`]'s on the whole body for every body that decodes,
//! and for every body cut short (the same `Truncated` text, positions in the whole body). A body
//! with several faults may name a different one first: a stream meets them in body order, while
//! [`decode_v2`] checks the byte limit and UTF-8 before anything else. The limits fail as soon as
//! they are passed: `max_bytes` at the chunk that passes it, `max_rows` at the row.
//!
//! [`decode_v2`]: super::decode_v2

use std::io::Read;
use std::marker::PhantomData;

use serde::de::DeserializeSeed;
use serde_json::de::{Read as _, StrRead};

use super::cells::{RowsCtx, RowsState};
use super::error::QueryError;
use super::v2::{
    BodyEnd, FieldSeed, Frame, FrameDecoder, FrameSeed, FramesSeed, Key, Position, RowsTarget,
    empty_body, json_error_at, not_utf8, unexpected_body,
};
use super::{DataSet, QueryLimits};

/// Bytes [`decode_v2_reader`] reads at a time.
const READ_CHUNK: usize = 128 << 10;

/// Decodes a v2 body read from `reader` as it is read, holding the decoded rows and one chunk
/// (never the whole body): what [`super::decode_v2`] returns on the whole body, for bodies too
/// large to hold twice (a saved response, the decode bench).
pub fn decode_v2_reader(
    mut reader: impl Read,
    limits: &QueryLimits,
) -> Result<DataSet, QueryError> {
    let mut stream = V2Stream::new(*limits, None);
    loop {
        match stream.read_from(&mut reader) {
            Ok(0) => return stream.finish().map(|(set, _)| set),
            Ok(_) => {}
            Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(ReadError::Io(e)) => {
                return Err(QueryError::Truncated {
                    detail: format!("reading the body failed: {e}"),
                });
            }
            Err(ReadError::Decode(e)) => return Err(e),
        }
    }
}

/// Why [`V2Stream::read_from`] stopped.
pub(crate) enum ReadError {
    Io(std::io::Error),
    Decode(QueryError),
}

/// A v2 body being decoded as it arrives. After an error, drop it.
pub(crate) struct V2Stream {
    input: Input,
    dec: FrameDecoder,
    state: State,
    limits: QueryLimits,
    /// A body whose first byte is not `[`, kept whole: [`decode_v2`](super::decode_v2) reports it
    /// with its text.
    other: Option<Vec<u8>>,
    /// Do not parse again before the buffer holds this many bytes (a value cut by the end of the
    /// buffer waits until the buffer has doubled).
    retry_at: usize,
}

/// Where the walk is: what the next byte may be.
enum State {
    /// Before the `[` of the frame array.
    Start,
    Frames(After),
    Frame(Box<OpenFrame>),
    /// After the closing `]`: whitespace only.
    Done,
}

/// What came last in an array or object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// Its `[` or `{`.
    Open,
    /// An element (or a key's value).
    Item,
    /// A `,`.
    Comma,
}

struct OpenFrame {
    frame: Frame,
    at: InFrame,
}

enum InFrame {
    Keys(After),
    /// After a key, before its `:`.
    Colon(Key),
    /// After `:`.
    Value(Key),
    /// Inside a `Rows` array decoded row by row.
    Rows {
        target: RowsTarget,
        ctx: RowsCtx,
        rows: RowsState,
        after: After,
    },
}

/// What one step of the walk did.
#[derive(Debug)]
enum Step {
    /// Took this many bytes.
    Took(usize),
    /// The value here is cut by the end of the buffer: wait for more.
    More,
}

/// A punctuation fault, as serde_json would report it on the whole body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    ListCommaOrEnd,
    ObjectCommaOrEnd,
    KeyMustBeAString,
    Colon,
    TrailingComma,
    TrailingCharacters,
    EofList,
    EofObject,
    EofValue,
}

impl Fault {
    /// A JSON text serde_json rejects for this fault alone: its error gives the words, so the
    /// stream says exactly what [`decode_v2`](super::decode_v2) says.
    fn example(self) -> &'static str {
        match self {
            Fault::ListCommaOrEnd => "[0 x",
            Fault::ObjectCommaOrEnd => r#"{"":0 x"#,
            Fault::KeyMustBeAString => "{x",
            Fault::Colon => r#"{"" x"#,
            Fault::TrailingComma => "[0,]",
            Fault::TrailingCharacters => "0 x",
            Fault::EofList => "[",
            Fault::EofObject => "{",
            Fault::EofValue => "[0,",
        }
    }

    fn error(self, at: Position, end: &BodyEnd) -> QueryError {
        // `Value`, not `IgnoredAny`: serde_json skips ignored values on a path with other words.
        match serde_json::from_str::<serde_json::Value>(self.example()) {
            Err(e) => json_error_at(&e, at, end),
            Ok(_) => QueryError::Malformed {
                detail: format!("{self:?} at line {} column {}", at.line, at.column),
            },
        }
    }
}

impl V2Stream {
    /// `body_len`: the body's length when known in advance (a plain `Content-Length`); else the
    /// byte limit stands for it. It sizes the primary table once, as [`decode_v2`](super::decode_v2)
    /// does: growing it by doubling would leave each outgrown copy resident in the heap (capacity
    /// never touched costs no RSS).
    pub(crate) fn new(limits: QueryLimits, body_len: Option<usize>) -> V2Stream {
        V2Stream {
            input: Input::default(),
            dec: FrameDecoder::new(limits, body_len.unwrap_or(limits.max_bytes)),
            state: State::Start,
            limits,
            other: None,
            retry_at: 0,
        }
    }

    /// Bytes held now: the buffer and the decoded rows (what the query memory budget accounts).
    pub(crate) fn held_bytes(&self) -> u64 {
        let other = self.other.as_ref().map_or(0, Vec::capacity);
        (self.input.buf.capacity() + other) as u64 + self.dec.side.decoded
    }

    /// Estimated bytes of the decoded rows (see [`super::cells::Sideband::decoded`]).
    pub(crate) fn decoded_bytes(&self) -> u64 {
        self.dec.side.decoded
    }

    /// Primary rows decoded so far.
    pub(crate) fn primary_rows(&self) -> usize {
        self.dec.side.primary_rows
    }

    /// Decodes what `chunk` completes.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<(), QueryError> {
        self.take(chunk.len())?;
        if self.routed(chunk) {
            return Ok(());
        }
        self.input.buf.extend_from_slice(chunk);
        self.input.note(chunk);
        self.run(false)
    }

    /// Reads the next chunk from `reader` straight into the buffer and decodes what it completes;
    /// `Ok(0)` at the end of the body.
    pub(crate) fn read_from(&mut self, reader: &mut impl Read) -> Result<usize, ReadError> {
        // One `read` of a whole chunk (not `read_to_end`, whose small first reads cost a system
        // call each on a file); zeroing the room first is cheaper than those calls.
        let start = self.input.buf.len();
        self.input.buf.resize(start + READ_CHUNK, 0);
        let read = reader.read(&mut self.input.buf[start..]);
        let n = *read.as_ref().unwrap_or(&0);
        self.input.buf.truncate(start + n);
        let n = read.map_err(ReadError::Io)?;
        if self.other.is_some() || matches!(self.state, State::Start) {
            // The first bytes decide whether this is a frame array at all.
            let chunk = self.input.buf.split_off(start);
            self.push(&chunk).map_err(ReadError::Decode)?;
            return Ok(n);
        }
        self.take(n).map_err(ReadError::Decode)?;
        if n > 0
            && let Some(last) = self.input.buf.last()
        {
            self.input.ends_in_whitespace = last.is_ascii_whitespace();
        }
        self.run(false).map_err(ReadError::Decode)?;
        Ok(n)
    }

    /// Ends the body: the result and the estimated bytes of its rows (see [`Self::decoded_bytes`]),
    /// or why there is none.
    pub(crate) fn finish(mut self) -> Result<(DataSet, u64), QueryError> {
        if let Some(body) = &self.other {
            return Err(unexpected_body(body));
        }
        self.run(true)?;
        let fault = match &self.state {
            State::Start => return Err(empty_body()),
            State::Done => {
                let decoded = self.dec.side.decoded;
                return self.dec.finish().map(|set| (set, decoded));
            }
            State::Frames(After::Comma) => Fault::EofValue,
            State::Frames(_) => Fault::EofList,
            State::Frame(open) => match &open.at {
                InFrame::Keys(After::Comma) | InFrame::Value(_) => Fault::EofValue,
                InFrame::Keys(_) | InFrame::Colon(_) => Fault::EofObject,
                InFrame::Rows { after, .. } if *after == After::Comma => Fault::EofValue,
                InFrame::Rows { .. } => Fault::EofList,
            },
        };
        let end = self.input.body_end();
        Err(fault.error(end.last, &end))
    }

    /// Counts `n` more body bytes against `max_bytes`.
    fn take(&mut self, n: usize) -> Result<(), QueryError> {
        self.input.total += n;
        if self.input.total > self.limits.max_bytes {
            return Err(QueryError::TooManyBytes {
                limit: self.limits.max_bytes,
            });
        }
        Ok(())
    }

    /// Keeps `chunk` aside when the body is not a frame array (its first byte is not `[`).
    fn routed(&mut self, chunk: &[u8]) -> bool {
        if let Some(body) = &mut self.other {
            body.extend_from_slice(chunk);
            return true;
        }
        if !matches!(self.state, State::Start) {
            return false;
        }
        match chunk.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) if chunk[i] != b'[' => {
                self.other = Some(chunk[i..].to_vec());
                true
            }
            _ => false,
        }
    }

    /// Walks the buffer as far as it goes, then drops what was decoded from it.
    fn run(&mut self, end: bool) -> Result<(), QueryError> {
        if !end && self.input.buf.len() < self.retry_at {
            return Ok(());
        }
        let (pos, result) = self.walk(end);
        self.input.consume(pos);
        result
    }

    /// Steps until the buffer ends or a value in it is cut; returns the bytes walked.
    fn walk(&mut self, end: bool) -> (usize, Result<(), QueryError>) {
        let text = match self.input.text(end) {
            Ok(text) => text,
            Err(e) => return (0, Err(e)),
        };
        let mut pos = 0;
        loop {
            pos = skip_whitespace(text, pos);
            if pos == text.len() {
                self.retry_at = 0;
                return (pos, Ok(()));
            }
            let at = At {
                input: &self.input,
                text,
                pos,
                end,
            };
            match step(&mut self.state, &mut self.dec, &at) {
                Ok(Step::Took(n)) if n > 0 => pos += n,
                Ok(_) => {
                    self.retry_at = 2 * (self.input.buf.len() - pos);
                    return (pos, Ok(()));
                }
                Err(e) => return (pos, Err(e)),
            }
        }
    }
}

/// The offset of the first byte at or after `pos` that is not JSON whitespace.
fn skip_whitespace(text: &str, pos: usize) -> usize {
    let rest = text.as_bytes().get(pos..).unwrap_or_default();
    pos + rest
        .iter()
        .position(|b| !matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
        .unwrap_or(rest.len())
}

/// Where a step is: the buffered text, and the offset of the byte to look at (not whitespace).
#[derive(Clone, Copy)]
struct At<'a> {
    input: &'a Input,
    text: &'a str,
    pos: usize,
    end: bool,
}

impl<'a> At<'a> {
    fn byte(&self) -> u8 {
        self.text.as_bytes().get(self.pos).copied().unwrap_or(b' ')
    }

    /// A punctuation fault here: the error, or `More` when this is the last byte buffered
    /// (serde_json calls a fault at the body's very last byte a truncation).
    fn fault(&self, fault: Fault) -> Result<Step, QueryError> {
        if !self.end && self.pos + 1 == self.text.len() {
            return Ok(Step::More);
        }
        let at = self.input.position(self.input.origin + self.pos + 1);
        Err(fault.error(at, &self.input.body_end()))
    }

    /// Parses the one JSON value here with `parse`: how many bytes it took, or `More` when it is
    /// cut by the end of the buffer (what it did to `dec` is then undone: a row is dropped whole,
    /// and errors it reported are forgotten).
    fn value(
        &self,
        dec: &mut FrameDecoder,
        parse: impl FnOnce(
            &mut FrameDecoder,
            &mut serde_json::Deserializer<&mut StrRead<'a>>,
        ) -> Result<(), serde_json::Error>,
    ) -> Result<Step, QueryError> {
        let partial = dec.side.partial.len();
        let text: &'a str = self.text;
        let rest = &text[self.pos..];
        let mut read = StrRead::new(rest);
        let parsed = parse(dec, &mut serde_json::Deserializer::new(&mut read));
        // serde_json's count of the bytes the value took (what its `StreamDeserializer` reports).
        let took = read.byte_offset();
        let e = match parsed {
            // A number that ends where the buffer ends may go on with the next chunk (its field
            // is simply set again then; any other value ends with a byte that closes it).
            Ok(()) if !self.end && self.pos + took == self.text.len() && ends_in_digit(rest) => {
                return Ok(Step::More);
            }
            Ok(()) => return Ok(Step::Took(took)),
            Err(e) => e,
        };
        let input = self.input;
        let at = input.value_position(self.pos, &e);
        if !self.end && (e.is_eof() || at >= input.position(input.origin + self.text.len())) {
            dec.side.fatal = None;
            dec.side.partial.truncate(partial);
            return Ok(Step::More);
        }
        Err(dec
            .side
            .fatal
            .take()
            .unwrap_or_else(|| json_error_at(&e, at, &input.body_end())))
    }
}

fn ends_in_digit(text: &str) -> bool {
    text.as_bytes().last().is_some_and(u8::is_ascii_digit)
}

/// One step of the walk.
fn step(state: &mut State, dec: &mut FrameDecoder, at: &At<'_>) -> Result<Step, QueryError> {
    match state {
        State::Start if at.byte() == b'[' => {
            *state = State::Frames(After::Open);
            Ok(Step::Took(1))
        }
        // A byte `decode_v2` skips as whitespace and JSON does not (a form feed): serde_json says
        // what it is. (`push` routes a body whose first other byte is not `[` elsewhere.)
        State::Start => at.value(dec, |dec, de| FramesSeed { dec }.deserialize(de)),
        State::Frames(after) => match (at.byte(), *after) {
            (b']', After::Comma) => at.fault(Fault::TrailingComma),
            (b']', _) => {
                *state = State::Done;
                Ok(Step::Took(1))
            }
            (b',', After::Item) => {
                *after = After::Comma;
                Ok(Step::Took(1))
            }
            (_, After::Item) => at.fault(Fault::ListCommaOrEnd),
            (b'{', _) => {
                *state = State::Frame(Box::new(OpenFrame {
                    frame: Frame::default(),
                    at: InFrame::Keys(After::Open),
                }));
                Ok(Step::Took(1))
            }
            // Not an object: serde_json says what it is instead.
            _ => at.value(dec, |dec, de| FrameSeed { dec }.deserialize(de)),
        },
        State::Frame(open) => {
            let (taken, closed) = frame_step(open, dec, at)?;
            if let Some(frame) = closed {
                dec.finish_frame(frame)?;
                *state = State::Frames(After::Item);
            }
            Ok(taken)
        }
        State::Done => at.fault(Fault::TrailingCharacters),
    }
}

/// One step inside a frame object; the frame when its `}` closed it.
fn frame_step(
    open: &mut OpenFrame,
    dec: &mut FrameDecoder,
    at: &At<'_>,
) -> Result<(Step, Option<Frame>), QueryError> {
    let b = at.byte();
    let step = match &mut open.at {
        InFrame::Keys(after) => match (b, *after) {
            (b'}', After::Comma) => at.fault(Fault::TrailingComma),
            (b'}', _) => return Ok((Step::Took(1), Some(std::mem::take(&mut open.frame)))),
            (b',', After::Item) => {
                *after = After::Comma;
                Ok(Step::Took(1))
            }
            (_, After::Item) => at.fault(Fault::ObjectCommaOrEnd),
            (b'"', _) => {
                let mut key = None;
                let taken = at.value(dec, |_, de| {
                    key = Some(PhantomData::<Key>.deserialize(de)?);
                    Ok(())
                })?;
                if let (Step::Took(_), Some(key)) = (&taken, key) {
                    open.at = InFrame::Colon(key);
                }
                Ok(taken)
            }
            _ => at.fault(Fault::KeyMustBeAString),
        },
        InFrame::Colon(key) => {
            if b != b':' {
                return Ok((at.fault(Fault::Colon)?, None));
            }
            open.at = InFrame::Value(*key);
            Ok(Step::Took(1))
        }
        InFrame::Value(key) => {
            let key = *key;
            if key == Key::Rows
                && b == b'['
                && let Some((target, ctx)) = dec.rows_target(&open.frame)
                && let Some(rows) = dec.rows_state(&target)
            {
                open.at = InFrame::Rows {
                    target,
                    ctx,
                    rows,
                    after: After::Open,
                };
                return Ok((Step::Took(1), None));
            }
            let frame = &mut open.frame;
            let taken = at.value(dec, |dec, de| FieldSeed { dec, frame, key }.deserialize(de))?;
            if let Step::Took(_) = taken {
                open.at = InFrame::Keys(After::Item);
            }
            Ok(taken)
        }
        InFrame::Rows {
            target,
            ctx,
            rows,
            after,
        } => {
            // Rows are most of a body: walk them here, one after another, not one step each.
            let (mut here, mut closed) = (*at, false);
            loop {
                let step = match (here.byte(), *after) {
                    (b']', After::Comma) => here.fault(Fault::TrailingComma),
                    (b']', _) => {
                        closed = true;
                        break;
                    }
                    (b',', After::Item) => {
                        *after = After::Comma;
                        Ok(Step::Took(1))
                    }
                    (_, After::Item) => here.fault(Fault::ListCommaOrEnd),
                    _ => {
                        let taken =
                            here.value(dec, |dec, de| dec.rows_element(target, rows, ctx, de))?;
                        if let Step::Took(_) = taken {
                            *after = After::Item;
                        }
                        Ok(taken)
                    }
                };
                match step? {
                    Step::Took(n) => here.pos = skip_whitespace(here.text, here.pos + n),
                    Step::More if here.pos > at.pos => break,
                    Step::More => return Ok((Step::More, None)),
                }
                if here.pos == here.text.len() {
                    break;
                }
            }
            // Not at the end of the rows: also a trailing comma's `]` held back as the last byte
            // buffered (`fault` waits to see whether the body ends there).
            if !closed {
                return Ok((Step::Took(here.pos - at.pos), None));
            }
            // The `]` that ends the rows.
            rows.flush(&mut dec.side);
            let done = std::mem::replace(&mut open.at, InFrame::Keys(After::Item));
            if let InFrame::Rows {
                target: RowsTarget::New(table),
                ..
            } = done
            {
                open.frame.built = Some(table);
            }
            Ok(Step::Took(here.pos + 1 - at.pos))
        }
    };
    Ok((step?, None))
}

/// The bytes of the body not yet decoded, and where they are in it.
#[derive(Default)]
struct Input {
    /// The body from offset `origin` on (the value in progress and what came after it).
    buf: Vec<u8>,
    origin: usize,
    /// Newlines in the body before `origin`, and the offset just past the last of them.
    lines: usize,
    line_start: usize,
    /// Body bytes pushed, and whether the last one was whitespace.
    total: usize,
    ends_in_whitespace: bool,
}

impl Input {
    fn note(&mut self, chunk: &[u8]) {
        if let Some(last) = chunk.last() {
            self.ends_in_whitespace = last.is_ascii_whitespace();
        }
    }

    /// The buffer as text, up to a character cut by its end (all of it at the end of the body).
    fn text(&self, end: bool) -> Result<&str, QueryError> {
        match std::str::from_utf8(&self.buf) {
            Ok(text) => Ok(text),
            Err(e) if e.error_len().is_none() && !end => {
                std::str::from_utf8(&self.buf[..e.valid_up_to()]).map_err(|e| self.not_utf8(&e))
            }
            Err(e) => Err(self.not_utf8(&e)),
        }
    }

    fn not_utf8(&self, e: &std::str::Utf8Error) -> QueryError {
        not_utf8(self.origin + e.valid_up_to(), e.error_len())
    }

    /// Drops the first `n` bytes, counting their newlines.
    fn consume(&mut self, n: usize) {
        // One pass for both: a body has few newlines (one per frame, as Kusto writes it).
        for i in memchr::memchr_iter(b'\n', &self.buf[..n]) {
            self.lines += 1;
            self.line_start = self.origin + i + 1;
        }
        self.buf.drain(..n);
        self.origin += n;
    }

    /// serde_json's position for body offset `at` (at most the end of the buffer): the line and
    /// column of the byte before it.
    fn position(&self, at: usize) -> Position {
        let upto = at.saturating_sub(self.origin).min(self.buf.len());
        let before = &self.buf[..upto];
        let line = 1 + self.lines + memchr::memchr_iter(b'\n', before).count();
        let start = memchr::memrchr(b'\n', before).map_or(self.line_start, |i| self.origin + i + 1);
        Position {
            line,
            column: (self.origin + upto).saturating_sub(start),
        }
    }

    /// Where in the body serde_json's error `e` is, for a value parsed from buffer offset `pos`.
    fn value_position(&self, pos: usize, e: &serde_json::Error) -> Position {
        if e.line() <= 1 {
            // On the value's first line the column counts from the value's start.
            return self.position(self.origin + pos + e.column());
        }
        let first = self.position(self.origin + pos);
        Position {
            line: first.line + e.line() - 1,
            column: e.column(),
        }
    }

    /// The body's end as far as it has come.
    fn body_end(&self) -> BodyEnd {
        BodyEnd {
            last: self.position(self.origin + self.buf.len()),
            ends_in_whitespace: self.ends_in_whitespace,
        }
    }
}

#[cfg(test)]
mod tests;
