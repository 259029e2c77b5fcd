//! The decoded result of a Kusto query: typed columns and rows of [`Value`]s. These are the only types
//! the transform sees; nothing here knows about HTTP or JSON.
//!
//! Text cells are [`ArcStr`] (one word, so a `Value` is two): the decoder shares the repeated values of
//! a column (label columns hold few distinct strings), so equal cells mostly share one allocation and
//! cloning a cell is cheap.

pub use arcstr::ArcStr;

use crate::time::{Span, Ticks};

/// A Kusto column type (`ColumnType` on the wire; docs/design.md#kusto-types lists the set).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ColumnType {
    Bool,
    Int,
    Long,
    Real,
    Decimal,
    DateTime,
    TimeSpan,
    Guid,
    String,
    Dynamic,
    /// A type name this client does not know; its cells are kept as raw JSON text.
    Other(String),
}

/// One cell. Nulls exist for every type.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i32),
    Long(i64),
    /// Includes NaN and ±Infinity (sent by Kusto as the strings `"NaN"`, `"Infinity"`, `"-Infinity"`).
    Real(f64),
    /// Kept as Kusto's decimal text (128-bit precision does not fit an f64).
    Decimal(ArcStr),
    DateTime(Ticks),
    TimeSpan(Span),
    Guid(ArcStr),
    String(ArcStr),
    /// Raw compact JSON text, exactly as received (a JSON string stays a quoted JSON string).
    Dynamic(ArcStr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
}

/// A result table, row-major. Every row has exactly `columns.len()` cells.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    pub name: String,
    pub columns: Vec<Column>,
    cells: Vec<Value>,
}

impl Table {
    pub fn new(name: impl Into<String>, columns: Vec<Column>) -> Table {
        Table {
            name: name.into(),
            columns,
            cells: Vec::new(),
        }
    }

    /// Appends one row. The caller guarantees `row.len() == columns.len()`; a mismatch is a bug in the
    /// decoder, which validates ragged rows before calling this.
    pub fn push_row(&mut self, row: impl IntoIterator<Item = Value>) {
        let before = self.cells.len();
        self.cells.extend(row);
        debug_assert_eq!(self.cells.len() - before, self.columns.len());
    }

    /// Drops every row (Kusto's `DataReplace` fragments restart a table's rows).
    pub(crate) fn clear_rows(&mut self) {
        self.cells.clear();
    }

    /// The flat cell storage, for the decoder to append in place; it keeps the length a multiple of
    /// `columns.len()` (truncating a half-decoded row before returning).
    pub(crate) fn cells_mut(&mut self) -> &mut Vec<Value> {
        &mut self.cells
    }

    pub fn reserve_rows(&mut self, rows: usize) {
        self.cells.reserve(rows.saturating_mul(self.columns.len()));
    }

    pub fn row_count(&self) -> usize {
        self.cells
            .len()
            .checked_div(self.columns.len())
            .unwrap_or(0)
    }

    pub fn row(&self, i: usize) -> &[Value] {
        let w = self.columns.len();
        &self.cells[i * w..(i + 1) * w]
    }

    pub fn rows(&self) -> impl ExactSizeIterator<Item = &[Value]> + '_ {
        // chunks_exact panics on a zero width; a table without columns has no rows.
        self.cells.chunks_exact(self.columns.len().max(1))
    }

    /// The index of the column with exactly this name (Kusto column names are case-sensitive).
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A million-row table writes six million cells: their size is most of the decoder's memory traffic.
    #[test]
    fn a_value_is_two_words() {
        assert_eq!(size_of::<Value>(), 16);
    }
}
