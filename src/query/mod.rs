//! The Kusto REST v2 query client (SPEC §5).
pub mod table;
pub use table::{Column, ColumnType, Table, Value};
