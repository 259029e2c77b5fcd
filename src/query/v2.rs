//! The v2 response decoder (`/v2/rest/query`): a pure function from body bytes to a [`DataSet`].
//!
//! One UTF-8 check of the whole body, then one streaming pass over the frame array (serde visitors over
//! `serde_json::Deserializer::from_str`, no DOM). Dispatch is by `FrameType` only — `IsProgressive`/
//! `IsFragmented` are ignored — so plain `DataTable`s, progressive and fragmented tables (`TableHeader` →
//! `TableFragment`/`TableProgress` → `TableCompletion`, with `DataAppend` and `DataReplace`) all decode
//! the same way. Keys may come in any order: `Rows` that arrive before what they need (`Columns`,
//! `TableKind`, `TableId`, `TableFragmentType`) are kept as raw JSON and decoded at the end of the frame.
//!
//! Every partial-failure channel turns the whole result into [`QueryError::PartialFailure`]: error
//! objects inside `Rows`, `TableCompletion.OneApiErrors`, `DataSetCompletion.HasErrors`/`OneApiErrors`/
//! `Cancelled`, and QueryCompletionInformation rows with `Level` ≤ 2. A body without
//! `DataSetCompletion` is [`QueryError::Truncated`]: no metrics ever come from a cut response.
//! `TableCompletion.RowCount` is not cross-checked (its meaning under `DataReplace` is undocumented);
//! unknown frame types and frames after `DataSetCompletion` are ignored.
//!
//! The frame logic ([`FrameDecoder`], [`FieldSeed`]) is shared with the streaming decoder
//! (`stream.rs`), which feeds it one frame key and one row at a time as the body arrives.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::cells::{
    Dialect, RowsCtx, RowsSeed, RowsState, Sideband, decode_raw_rows, parse_column_type,
    parse_v1_data_type,
};
use super::error::{KustoErrorInfo, QueryError, truncate_text};
use super::table::{Column, Table};
use super::{DataSet, QueryLimits, TableKind};

/// Decodes a v2 body. Pure: no IO, no clock. A body over `limits.max_bytes` is refused as the
/// client refuses it on the wire ([`QueryError::TooManyBytes`]), so a saved body (`preview
/// --response`) meets the same limits as a live one.
pub fn decode_v2(body: &[u8], limits: &QueryLimits) -> Result<DataSet, QueryError> {
    if body.len() > limits.max_bytes {
        return Err(QueryError::TooManyBytes {
            limit: limits.max_bytes,
        });
    }
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Err(empty_body()),
        Some(b'[') => {}
        Some(_) => return Err(unexpected_body(body)),
    }
    // One validation pass over the whole body is cheaper than serde_json's per-string check.
    let text = body_text(body)?;
    let mut dec = FrameDecoder::new(*limits, body.len());
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = FramesSeed { dec: &mut dec }
        .deserialize(&mut de)
        .and_then(|()| de.end());
    if let Err(e) = parsed {
        return Err(dec.side.fatal.take().unwrap_or_else(|| json_error(e, body)));
    }
    dec.finish()
}

/// A body of whitespace only.
pub(crate) fn empty_body() -> QueryError {
    QueryError::Truncated {
        detail: "the body is empty".into(),
    }
}

/// A body that is not a frame array (a proxy's or gateway's text, say).
pub(crate) fn unexpected_body(body: &[u8]) -> QueryError {
    QueryError::UnexpectedBody {
        text: truncate_text(String::from_utf8_lossy(body).trim()),
    }
}

/// The body as text; invalid UTF-8 is malformed, a multi-byte character cut at the end is truncation.
fn body_text(body: &[u8]) -> Result<&str, QueryError> {
    std::str::from_utf8(body).map_err(|e| not_utf8(e.valid_up_to(), e.error_len()))
}

/// Bytes that are not UTF-8 from body offset `at` (`len`: of the bad sequence; `None`: a character
/// cut by the end of the body). Worded as `std::str::Utf8Error` words it, with the offset in the
/// whole body, so a streamed body fails with the same text.
pub(crate) fn not_utf8(at: usize, len: Option<usize>) -> QueryError {
    match len {
        None => QueryError::Truncated {
            detail: format!(
                "the body is not UTF-8: incomplete utf-8 byte sequence from index {at}"
            ),
        },
        Some(len) => QueryError::Malformed {
            detail: format!(
                "the body is not UTF-8: invalid utf-8 sequence of {len} bytes from index {at}"
            ),
        },
    }
}

/// A JSON error in `body`: truncation when the input ended — serde_json's EOF, or any error it
/// reports at the very last byte (a number cut after its `.`, `-` or exponent is "invalid number"
/// there, not EOF) — else a malformed body.
pub(crate) fn json_error(e: serde_json::Error, body: &[u8]) -> QueryError {
    let end = BodyEnd::of(body);
    json_error_at(&e, Position::of(&e), &end)
}

/// A position as serde_json reports it: 1-based line, and column counted in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    fn of(e: &serde_json::Error) -> Position {
        Position {
            line: e.line(),
            column: e.column(),
        }
    }
}

/// Where a body ends: the position of its last byte, and whether that byte is whitespace.
pub(crate) struct BodyEnd {
    pub last: Position,
    pub ends_in_whitespace: bool,
}

impl BodyEnd {
    fn of(body: &[u8]) -> BodyEnd {
        let line = body.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = body.len() - body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        BodyEnd {
            last: Position { line, column },
            ends_in_whitespace: body.last().is_some_and(u8::is_ascii_whitespace),
        }
    }
}

/// [`json_error`] for an error of serde_json's that happened at `at` in a body ending at `end`.
pub(crate) fn json_error_at(e: &serde_json::Error, at: Position, end: &BodyEnd) -> QueryError {
    let at_last_byte =
        !end.ends_in_whitespace && at.line == end.last.line && at.column >= end.last.column;
    let detail = if e.line() == 0 {
        e.to_string()
    } else {
        // serde_json words it "{code} at line {line} column {column}": keep the code, move the place.
        let text = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let code = text.strip_suffix(&suffix).unwrap_or(&text);
        format!("{code} at line {} column {}", at.line, at.column)
    };
    if e.is_eof() || (e.is_syntax() && at_last_byte) {
        QueryError::Truncated { detail }
    } else {
        QueryError::Malformed { detail }
    }
}

/// The frames decoded so far and what they said: one per response, fed whole frames
/// ([`FramesSeed`]) or one key at a time (the streaming decoder).
pub(crate) struct FrameDecoder {
    limits: QueryLimits,
    /// The body's length when known in advance (0 when not): sizes the primary table up front.
    body_len: usize,
    tables: Vec<Table>,
    kinds: Vec<TableKind>,
    /// `(TableId, index into tables)` of tables with a header and no completion yet.
    open: Vec<(i64, usize)>,
    pub(crate) side: Sideband,
    completed: bool,
    cancelled: bool,
    has_errors: bool,
}

/// Frame keys we read; the rest are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(field_identifier)]
pub(crate) enum Key {
    FrameType,
    TableId,
    TableKind,
    TableName,
    Columns,
    Rows,
    TableFragmentType,
    HasErrors,
    Cancelled,
    OneApiErrors,
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameType {
    DataSetHeader,
    DataTable,
    TableHeader,
    TableFragment,
    TableProgress,
    TableCompletion,
    DataSetCompletion,
    Unknown,
}

impl FrameType {
    fn parse(s: &str) -> FrameType {
        match s {
            "DataSetHeader" => FrameType::DataSetHeader,
            "DataTable" => FrameType::DataTable,
            "TableHeader" => FrameType::TableHeader,
            "TableFragment" => FrameType::TableFragment,
            "TableProgress" => FrameType::TableProgress,
            "TableCompletion" => FrameType::TableCompletion,
            "DataSetCompletion" => FrameType::DataSetCompletion,
            _ => FrameType::Unknown,
        }
    }
}

/// A column as sent in `Columns` (v2 `ColumnType`; v1 `DataType` as a fallback).
#[derive(Deserialize)]
pub(crate) struct WireColumn {
    #[serde(rename = "ColumnName")]
    name: String,
    #[serde(rename = "ColumnType", default)]
    column_type: Option<String>,
    #[serde(rename = "DataType", default)]
    data_type: Option<String>,
}

impl WireColumn {
    pub(crate) fn into_column(self) -> Column {
        let ty = match (&self.column_type, &self.data_type) {
            (Some(t), _) => parse_column_type(t),
            (None, Some(t)) => parse_v1_data_type(t),
            (None, None) => parse_column_type(""),
        };
        Column {
            name: self.name,
            ty,
        }
    }
}

/// What one frame object said, collected key by key.
#[derive(Default)]
pub(crate) struct Frame {
    frame_type: Option<FrameType>,
    table_id: Option<i64>,
    kind: Option<TableKind>,
    name: Option<String>,
    columns: Option<Vec<Column>>,
    replace: Option<bool>,
    has_errors: bool,
    cancelled: bool,
    errors: Option<serde_json::Value>,
    /// A DataTable whose rows were decoded in place.
    pub(crate) built: Option<Table>,
    /// Rows that came before what they need (rare: no service sends them so).
    raw_rows: Option<Box<RawValue>>,
}

/// Where a frame's `Rows` go when they can be decoded as they come.
pub(crate) enum RowsTarget {
    /// A DataTable's own new table (it becomes [`Frame::built`]).
    New(Table),
    /// An open progressive table (index into the decoder's tables).
    Open(usize),
}

/// The whole frame array.
pub(crate) struct FramesSeed<'a> {
    pub(crate) dec: &'a mut FrameDecoder,
}

impl<'de> DeserializeSeed<'de> for FramesSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for FramesSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of v2 frames")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(FrameSeed {
                dec: &mut *self.dec,
            })?
            .is_some()
        {}
        Ok(())
    }
}

/// One whole frame.
pub(crate) struct FrameSeed<'a> {
    pub(crate) dec: &'a mut FrameDecoder,
}

impl<'de> DeserializeSeed<'de> for FrameSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FrameSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a v2 frame object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut frame = Frame::default();
        while let Some(key) = map.next_key::<Key>()? {
            map.next_value_seed(FieldSeed {
                dec: &mut *self.dec,
                frame: &mut frame,
                key,
            })?;
        }
        self.dec
            .finish_frame(frame)
            .map_err(|e| self.dec.side.fail::<A::Error>(e))
    }
}

/// The value of one frame key, read into its [`Frame`]. Every field is set only once its whole
/// value has been read.
pub(crate) struct FieldSeed<'a> {
    pub(crate) dec: &'a mut FrameDecoder,
    pub(crate) frame: &'a mut Frame,
    pub(crate) key: Key,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let f = self.frame;
        match self.key {
            Key::FrameType => f.frame_type = Some(FrameType::parse(&CowStr::deserialize(d)?.0)),
            Key::TableId => f.table_id = Some(i64::deserialize(d)?),
            Key::TableKind => f.kind = Some(TableKind::parse(&CowStr::deserialize(d)?.0)),
            Key::TableName => f.name = Some(String::deserialize(d)?),
            Key::Columns => {
                let cols = Vec::<WireColumn>::deserialize(d)?;
                f.columns = Some(cols.into_iter().map(WireColumn::into_column).collect());
            }
            Key::TableFragmentType => f.replace = Some(CowStr::deserialize(d)?.0 == "DataReplace"),
            Key::HasErrors => f.has_errors = Option::<bool>::deserialize(d)?.unwrap_or(false),
            Key::Cancelled => f.cancelled = Option::<bool>::deserialize(d)?.unwrap_or(false),
            Key::OneApiErrors => f.errors = Some(serde_json::Value::deserialize(d)?),
            Key::Rows => self.dec.rows_whole(f, d)?,
            Key::Other => {
                IgnoredAny::deserialize(d)?;
            }
        }
        Ok(())
    }
}

/// A string that borrows when it has no escapes.
struct CowStr<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(s.into()))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(s.to_owned().into()))
            }
        }
        d.deserialize_str(V)
    }
}

impl FrameDecoder {
    pub(crate) fn new(limits: QueryLimits, body_len: usize) -> FrameDecoder {
        FrameDecoder {
            limits,
            body_len,
            tables: Vec::new(),
            kinds: Vec::new(),
            open: Vec::new(),
            side: Sideband::default(),
            completed: false,
            cancelled: false,
            has_errors: false,
        }
    }

    fn rows_ctx(&self, label: String, kind: &TableKind) -> RowsCtx {
        RowsCtx {
            label,
            dialect: Dialect::V2,
            max_rows: (*kind == TableKind::PrimaryResult).then_some(self.limits.max_rows),
        }
    }

    /// Rows to reserve for a primary table: what the body could hold at ≥ 8 bytes per cell, capped by
    /// the row limit. Saves the repeated regrowth of a large table; untouched capacity costs no RSS.
    fn row_capacity_hint(&self, columns: usize) -> usize {
        (self.body_len / (columns.max(1) * 8)).min(self.limits.max_rows)
    }

    fn open_index(&self, id: i64) -> Option<usize> {
        self.open
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, idx)| *idx)
    }

    /// Where `Rows` go if the frame has already said everything they need (a DataTable's columns
    /// and kind, a TableFragment's open table and fragment type), else `None`: the rows must wait
    /// for the end of the frame. A `DataReplace` fragment drops its table's rows here.
    pub(crate) fn rows_target(&mut self, f: &Frame) -> Option<(RowsTarget, RowsCtx)> {
        match (f.frame_type, &f.columns, &f.kind, f.table_id, f.replace) {
            (Some(FrameType::DataTable), Some(columns), Some(kind), _, _) => {
                let label = table_label(f.name.as_deref(), f.table_id);
                let mut table = Table::new(f.name.clone().unwrap_or_default(), columns.clone());
                if *kind == TableKind::PrimaryResult {
                    table.reserve_rows(self.row_capacity_hint(columns.len()));
                }
                Some((RowsTarget::New(table), self.rows_ctx(label, kind)))
            }
            (Some(FrameType::TableFragment), _, _, Some(id), Some(replace)) => {
                let idx = self.open_index(id)?;
                if replace {
                    self.replace_rows(idx);
                }
                let (table, kind) = (self.tables.get(idx)?, self.kinds.get(idx)?);
                let ctx = self.rows_ctx(table_label(Some(&table.name), Some(id)), kind);
                Some((RowsTarget::Open(idx), ctx))
            }
            _ => None,
        }
    }

    /// The state for decoding `Rows` into `target` one element at a time.
    pub(crate) fn rows_state(&self, target: &RowsTarget) -> Option<RowsState> {
        match target {
            RowsTarget::New(table) => Some(RowsState::new(table)),
            RowsTarget::Open(idx) => self.tables.get(*idx).map(RowsState::new),
        }
    }

    /// Decodes one element of a `Rows` array streamed into `target` (see [`RowsState::element`]).
    pub(crate) fn rows_element<'de, D: Deserializer<'de>>(
        &mut self,
        target: &mut RowsTarget,
        state: &mut RowsState,
        ctx: &RowsCtx,
        d: D,
    ) -> Result<(), D::Error> {
        let table = match target {
            RowsTarget::New(table) => table,
            RowsTarget::Open(idx) => self
                .tables
                .get_mut(*idx)
                .ok_or_else(|| de::Error::custom("table index out of range"))?,
        };
        state.element(d, table, ctx, &mut self.side)
    }

    /// Decodes a whole `Rows` value straight into its table when the frame already said everything
    /// needed, else keeps it raw for [`FrameDecoder::finish_frame`].
    fn rows_whole<'de, D: Deserializer<'de>>(
        &mut self,
        f: &mut Frame,
        d: D,
    ) -> Result<(), D::Error> {
        let Some((mut target, ctx)) = self.rows_target(f) else {
            f.raw_rows = Some(Box::<RawValue>::deserialize(d)?);
            return Ok(());
        };
        let table = match &mut target {
            RowsTarget::New(table) => table,
            RowsTarget::Open(idx) => self
                .tables
                .get_mut(*idx)
                .ok_or_else(|| de::Error::custom("table index out of range"))?,
        };
        RowsSeed {
            table,
            ctx: &ctx,
            side: &mut self.side,
        }
        .deserialize(d)?;
        if let RowsTarget::New(table) = target {
            f.built = Some(table);
        }
        Ok(())
    }

    /// `DataReplace`: the table's rows so far are superseded.
    fn replace_rows(&mut self, idx: usize) {
        if let (Some(table), Some(kind)) = (self.tables.get_mut(idx), self.kinds.get(idx)) {
            if *kind == TableKind::PrimaryResult {
                self.side.primary_rows -= table.row_count().min(self.side.primary_rows);
            }
            table.clear_rows();
        }
    }

    pub(crate) fn finish_frame(&mut self, f: Frame) -> Result<(), QueryError> {
        let Some(frame_type) = f.frame_type else {
            return Err(protocol("a frame without FrameType".into()));
        };
        match frame_type {
            FrameType::DataSetHeader | FrameType::TableProgress | FrameType::Unknown => Ok(()),
            FrameType::DataTable => self.finish_data_table(f),
            FrameType::TableHeader => self.finish_table_header(f),
            FrameType::TableFragment => self.finish_fragment(f),
            FrameType::TableCompletion => {
                let id = f
                    .table_id
                    .ok_or_else(|| protocol("a TableCompletion without TableId".into()))?;
                self.open.retain(|(i, _)| *i != id);
                if let Some(errors) = &f.errors {
                    self.side
                        .partial
                        .extend(KustoErrorInfo::list_from_json(errors));
                }
                Ok(())
            }
            FrameType::DataSetCompletion => {
                self.completed = true;
                self.has_errors |= f.has_errors;
                self.cancelled |= f.cancelled;
                if let Some(errors) = &f.errors {
                    self.side
                        .partial
                        .extend(KustoErrorInfo::list_from_json(errors));
                }
                Ok(())
            }
        }
    }

    fn finish_data_table(&mut self, f: Frame) -> Result<(), QueryError> {
        let kind = f.kind.unwrap_or(TableKind::Other(String::new()));
        let name = f.name.unwrap_or_default();
        let mut table = match f.built {
            Some(t) => t,
            None => {
                let columns = f
                    .columns
                    .ok_or_else(|| protocol(format!("DataTable {name:?} has no Columns")))?;
                let mut t = Table::new(name.clone(), columns);
                if let Some(raw) = f.raw_rows {
                    let ctx = self.rows_ctx(table_label(Some(&name), f.table_id), &kind);
                    decode_raw_rows(&raw, &mut t, &ctx, &mut self.side)?;
                }
                t
            }
        };
        table.name = name;
        self.tables.push(table);
        self.kinds.push(kind);
        Ok(())
    }

    fn finish_table_header(&mut self, f: Frame) -> Result<(), QueryError> {
        let id = f
            .table_id
            .ok_or_else(|| protocol("a TableHeader without TableId".into()))?;
        let columns = f
            .columns
            .ok_or_else(|| protocol(format!("TableHeader {id} has no Columns")))?;
        if self.open_index(id).is_some() {
            return Err(protocol(format!("a second TableHeader for table id {id}")));
        }
        self.open.push((id, self.tables.len()));
        self.tables
            .push(Table::new(f.name.unwrap_or_default(), columns));
        self.kinds
            .push(f.kind.unwrap_or(TableKind::Other(String::new())));
        Ok(())
    }

    fn finish_fragment(&mut self, f: Frame) -> Result<(), QueryError> {
        let Some(raw) = f.raw_rows else {
            return Ok(()); // decoded in place (or no Rows at all)
        };
        let id = f
            .table_id
            .ok_or_else(|| protocol("a TableFragment without TableId".into()))?;
        let idx = self.open_index(id).ok_or_else(|| {
            protocol(format!(
                "a TableFragment for table id {id} outside TableHeader..TableCompletion"
            ))
        })?;
        if f.replace == Some(true) {
            self.replace_rows(idx);
        }
        let (Some(table), Some(kind)) = (self.tables.get_mut(idx), self.kinds.get(idx)) else {
            return Err(protocol(format!("table id {id} lost")));
        };
        let ctx = RowsCtx {
            label: table_label(Some(&table.name), Some(id)),
            dialect: Dialect::V2,
            max_rows: (*kind == TableKind::PrimaryResult).then_some(self.limits.max_rows),
        };
        decode_raw_rows(&raw, table, &ctx, &mut self.side)
    }

    pub(crate) fn finish(mut self) -> Result<DataSet, QueryError> {
        if !self.completed {
            return Err(QueryError::Truncated {
                detail: "the response ended without DataSetCompletion".into(),
            });
        }
        if let Some((id, _)) = self.open.first() {
            return Err(protocol(format!(
                "table id {id} has a TableHeader but no TableCompletion"
            )));
        }
        let mut set = DataSet {
            tables: self.tables,
            kinds: self.kinds,
            warnings: Vec::new(),
        };
        let mut errors = std::mem::take(&mut self.side.partial);
        let (status_errors, warnings) = set.completion_events();
        errors.extend(status_errors);
        set.warnings = warnings;
        if self.has_errors && errors.is_empty() {
            errors.push(KustoErrorInfo {
                message: "DataSetCompletion.HasErrors is true but no error was reported".into(),
                ..KustoErrorInfo::default()
            });
        }
        check_partial(set, errors, self.cancelled)
    }
}

/// Any reported error or a cancellation fails the whole result.
pub(crate) fn check_partial(
    set: DataSet,
    mut errors: Vec<KustoErrorInfo>,
    cancelled: bool,
) -> Result<DataSet, QueryError> {
    dedup(&mut errors);
    if errors.is_empty() && !cancelled {
        return Ok(set);
    }
    if errors.is_empty() {
        errors.push(KustoErrorInfo {
            message: "DataSetCompletion.Cancelled is true".into(),
            ..KustoErrorInfo::default()
        });
    }
    Err(QueryError::PartialFailure { errors, cancelled })
}

/// The same error often comes twice (in the rows and again in DataSetCompletion).
fn dedup(errors: &mut Vec<KustoErrorInfo>) {
    let mut seen = Vec::new();
    errors.retain(|e| {
        let fresh = !seen.contains(e);
        if fresh {
            seen.push(e.clone());
        }
        fresh
    });
}

fn protocol(detail: String) -> QueryError {
    QueryError::Protocol { detail }
}

fn table_label(name: Option<&str>, id: Option<i64>) -> String {
    match (name, id) {
        (Some(n), _) if !n.is_empty() => n.to_owned(),
        (_, Some(id)) => format!("table id {id}"),
        _ => "unnamed table".to_owned(),
    }
}
