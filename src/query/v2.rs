//! The v2 response decoder (`/v2/rest/query`): a pure function from body bytes to a [`DataSet`].
//!
//! One UTF-8 check of the whole body, then one streaming pass over the frame array (serde visitors over
//! `serde_json::Deserializer::from_str`, no DOM). Dispatch is by `FrameType` only — `IsProgressive`/
//! `IsFragmented` are ignored — so plain `DataTable`s, progressive and fragmented tables (`TableHeader` →
//! `TableFragment`/`TableProgress` → `TableCompletion`, with `DataAppend` and `DataReplace`) all decode
//! the same way. Keys may come in any order: `Rows` that arrive before what they need (`Columns`,
//! `TableKind`, `TableId`, `TableFragmentType`) are kept as a borrowed raw slice and decoded at the end
//! of the frame.
//!
//! Every partial-failure channel turns the whole result into [`QueryError::PartialFailure`]: error
//! objects inside `Rows`, `TableCompletion.OneApiErrors`, `DataSetCompletion.HasErrors`/`OneApiErrors`/
//! `Cancelled`, and QueryCompletionInformation rows with `Level` ≤ 2. A body without
//! `DataSetCompletion` is [`QueryError::Truncated`]: no metrics ever come from a cut response.
//! `TableCompletion.RowCount` is not cross-checked (its meaning under `DataReplace` is undocumented);
//! unknown frame types and frames after `DataSetCompletion` are ignored.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::budget::Reservation;
use super::cells::{
    Dialect, Meter, RowsCtx, RowsSeed, Sideband, decode_raw_rows, parse_column_type,
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
    decode_v2_metered(body, limits, None).0
}

/// As [`decode_v2`], accounting the decoded rows in `reservation` on top of what it already
/// accounts (the body): fails with [`QueryError::MemoryBusy`] when the budget is busy (the caller
/// may wait and decode again) or [`QueryError::OverMemoryBudget`] when the rows cannot fit at all.
pub(crate) fn decode_v2_within(
    body: &[u8],
    limits: &QueryLimits,
    reservation: &mut Reservation,
) -> Result<DataSet, QueryError> {
    if reservation.budget_bytes().is_none() {
        return decode_v2(body, limits);
    }
    let meter = Meter {
        base: reservation.used_bytes(),
        reservation: std::mem::take(reservation),
        decoded: 0,
        max_rows: limits.max_rows,
    };
    let (result, meter) = decode_v2_metered(body, limits, Some(meter));
    if let Some(meter) = meter {
        *reservation = meter.reservation;
    }
    result
}

fn decode_v2_metered(
    body: &[u8],
    limits: &QueryLimits,
    meter: Option<Meter>,
) -> (Result<DataSet, QueryError>, Option<Meter>) {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            let err = QueryError::Truncated {
                detail: "the body is empty".into(),
            };
            return (Err(err), meter);
        }
        Some(b'[') => {}
        Some(_) => {
            let err = QueryError::UnexpectedBody {
                text: truncate_text(String::from_utf8_lossy(body).trim()),
            };
            return (Err(err), meter);
        }
    }
    // One validation pass over the whole body is cheaper than serde_json's per-string check.
    let text = match body_text(body) {
        Ok(text) => text,
        Err(e) => return (Err(e), meter),
    };
    let mut dec = FrameDecoder {
        limits: *limits,
        body_len: body.len(),
        tables: Vec::new(),
        kinds: Vec::new(),
        open: Vec::new(),
        side: Sideband {
            meter,
            ..Sideband::default()
        },
        completed: false,
        cancelled: false,
        has_errors: false,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = FramesSeed { dec: &mut dec }
        .deserialize(&mut de)
        .and_then(|()| de.end());
    let meter = dec.side.meter.take();
    if let Err(e) = parsed {
        let err = dec
            .side
            .fatal
            .take()
            .unwrap_or_else(|| json_error(e, text.as_bytes()));
        return (Err(err), meter);
    }
    (dec.finish(), meter)
}

/// The body as text; invalid UTF-8 is malformed, a multi-byte character cut at the end is truncation.
fn body_text(body: &[u8]) -> Result<&str, QueryError> {
    std::str::from_utf8(body).map_err(|e| {
        let detail = format!("the body is not UTF-8: {e}");
        match e.error_len() {
            None => QueryError::Truncated { detail },
            Some(_) => QueryError::Malformed { detail },
        }
    })
}

/// A serde_json error that no visitor explained: EOF means the body was cut short.
/// A JSON error in `body`: truncation when the input ended — serde_json's EOF, or any error it
/// reports at the very last byte (a number cut after its `.`, `-` or exponent is "invalid number"
/// there, not EOF) — else a malformed body.
pub(crate) fn json_error(e: serde_json::Error, body: &[u8]) -> QueryError {
    if e.is_eof() || (e.is_syntax() && at_last_byte(&e, body)) {
        QueryError::Truncated {
            detail: e.to_string(),
        }
    } else {
        QueryError::Malformed {
            detail: e.to_string(),
        }
    }
}

/// Whether `e`'s position (1-based line and column, counted in bytes) is the last byte of `body`.
fn at_last_byte(e: &serde_json::Error, body: &[u8]) -> bool {
    let last_line = body.iter().filter(|&&b| b == b'\n').count() + 1;
    let last_column = body.len() - body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    !body.last().is_some_and(u8::is_ascii_whitespace)
        && e.line() == last_line
        && e.column() >= last_column
}

struct FrameDecoder {
    limits: QueryLimits,
    body_len: usize,
    tables: Vec<Table>,
    kinds: Vec<TableKind>,
    /// `(TableId, index into tables)` of tables with a header and no completion yet.
    open: Vec<(i64, usize)>,
    side: Sideband,
    completed: bool,
    cancelled: bool,
    has_errors: bool,
}

/// Frame keys we read; the rest are skipped.
#[derive(Deserialize)]
#[serde(field_identifier)]
enum Key {
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
struct Frame<'de> {
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
    built: Option<Table>,
    /// Rows that came before what they need.
    raw_rows: Option<&'de RawValue>,
}

struct FramesSeed<'a> {
    dec: &'a mut FrameDecoder,
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

struct FrameSeed<'a> {
    dec: &'a mut FrameDecoder,
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
        let mut f = Frame::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::FrameType => {
                    let s: std::borrow::Cow<'de, str> = map.next_value::<CowStr<'de>>()?.0;
                    f.frame_type = Some(FrameType::parse(&s));
                }
                Key::TableId => f.table_id = Some(map.next_value()?),
                Key::TableKind => {
                    f.kind = Some(TableKind::parse(&map.next_value::<CowStr<'de>>()?.0))
                }
                Key::TableName => f.name = Some(map.next_value()?),
                Key::Columns => {
                    let cols: Vec<WireColumn> = map.next_value()?;
                    f.columns = Some(cols.into_iter().map(WireColumn::into_column).collect());
                }
                Key::TableFragmentType => {
                    let s = map.next_value::<CowStr<'de>>()?.0;
                    f.replace = Some(s == "DataReplace");
                }
                Key::HasErrors => f.has_errors = map.next_value::<Option<bool>>()?.unwrap_or(false),
                Key::Cancelled => f.cancelled = map.next_value::<Option<bool>>()?.unwrap_or(false),
                Key::OneApiErrors => f.errors = Some(map.next_value()?),
                Key::Rows => self.dec.rows_in_place(&mut f, &mut map)?,
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        self.dec
            .finish_frame(f)
            .map_err(|e| self.dec.side.fail::<A::Error>(e))
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
    fn rows_ctx(&self, label: String, kind: &TableKind, dialect: Dialect) -> RowsCtx {
        RowsCtx {
            label,
            dialect,
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

    /// Decodes `Rows` straight into its table when the frame already said everything needed, else
    /// keeps the raw slice for [`FrameDecoder::finish_frame`].
    fn rows_in_place<'de, A: MapAccess<'de>>(
        &mut self,
        f: &mut Frame<'de>,
        map: &mut A,
    ) -> Result<(), A::Error> {
        match (f.frame_type, &f.columns, &f.kind, f.table_id, f.replace) {
            (Some(FrameType::DataTable), Some(columns), Some(kind), _, _) => {
                let label = table_label(f.name.as_deref(), f.table_id);
                let mut table = Table::new(f.name.clone().unwrap_or_default(), columns.clone());
                if *kind == TableKind::PrimaryResult {
                    table.reserve_rows(self.row_capacity_hint(columns.len()));
                }
                let ctx = self.rows_ctx(label, kind, Dialect::V2);
                map.next_value_seed(RowsSeed {
                    table: &mut table,
                    ctx: &ctx,
                    side: &mut self.side,
                })?;
                f.built = Some(table);
            }
            (Some(FrameType::TableFragment), _, _, Some(id), Some(replace))
                if self.open_index(id).is_some() =>
            {
                let idx = self.open_index(id).unwrap_or_default();
                if replace {
                    self.replace_rows(idx);
                }
                let (Some(table), Some(kind)) = (self.tables.get_mut(idx), self.kinds.get(idx))
                else {
                    return Err(de::Error::custom("table index out of range"));
                };
                let ctx = RowsCtx {
                    label: table_label(Some(&table.name), Some(id)),
                    dialect: Dialect::V2,
                    max_rows: (*kind == TableKind::PrimaryResult).then_some(self.limits.max_rows),
                };
                map.next_value_seed(RowsSeed {
                    table,
                    ctx: &ctx,
                    side: &mut self.side,
                })?;
            }
            _ => f.raw_rows = Some(map.next_value()?),
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

    fn finish_frame(&mut self, f: Frame<'_>) -> Result<(), QueryError> {
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

    fn finish_data_table(&mut self, f: Frame<'_>) -> Result<(), QueryError> {
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
                    let ctx =
                        self.rows_ctx(table_label(Some(&name), f.table_id), &kind, Dialect::V2);
                    decode_raw_rows(raw, &mut t, &ctx, &mut self.side)?;
                }
                t
            }
        };
        table.name = name;
        self.tables.push(table);
        self.kinds.push(kind);
        Ok(())
    }

    fn finish_table_header(&mut self, f: Frame<'_>) -> Result<(), QueryError> {
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

    fn finish_fragment(&mut self, f: Frame<'_>) -> Result<(), QueryError> {
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
        decode_raw_rows(raw, table, &ctx, &mut self.side)
    }

    fn finish(mut self) -> Result<DataSet, QueryError> {
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
