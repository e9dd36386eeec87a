//! Large bulk inserts on PostgreSQL through `COPY … FROM STDIN` (text format): the server
//! fills whole heap pages per WAL record (its multi-insert path) instead of one tuple at a
//! time as an `INSERT … SELECT` of unnested arrays does. Small inserts keep that one statement
//! (COPY costs an extra round trip).

use std::fmt::Write as _;

use sqlx::PgConnection;

use super::{Ty, Val};
use crate::store::{format_instant, StoreError};

/// Inserts from this many rows on go through COPY.
pub const COPY_FROM_ROWS: usize = 500;

/// `rows` into `table` (`cols` in the order of each row's values) in one COPY.
pub async fn copy_rows(
    conn: &mut PgConnection,
    table: &str,
    cols: &[(&str, Ty)],
    rows: &[Vec<Val>],
) -> Result<(), StoreError> {
    let names = cols.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
    let mut data = String::with_capacity(rows.len() * 64 * cols.len().max(1));
    for row in rows {
        if row.len() != cols.len() {
            return Err(StoreError::Corrupt(format!(
                "{table}: a row of {} values for {} columns",
                row.len(),
                cols.len()
            )));
        }
        for (i, (v, (name, ty))) in row.iter().zip(cols).enumerate() {
            if i > 0 {
                data.push('\t');
            }
            field(&mut data, v, *ty)
                .map_err(|v| StoreError::Corrupt(format!("{table}.{name}: {v} in a {ty:?} column")))?;
        }
        data.push('\n');
    }
    let mut copy = conn.copy_in_raw(&format!("COPY {table} ({names}) FROM STDIN")).await?;
    copy.send(data.as_bytes()).await?;
    copy.finish().await?;
    Ok(())
}

/// One value in COPY's text format (`\N` for NULL); the value back when it is not of `ty`.
fn field(out: &mut String, v: &Val, ty: Ty) -> Result<(), String> {
    match (v, ty) {
        (Val::Text(None) | Val::Json(None), Ty::Text | Ty::Json)
        | (Val::Int(None), Ty::Int)
        | (Val::Bytes(None), Ty::Bytes)
        | (Val::Instant(None), Ty::Instant) => out.push_str("\\N"),
        (Val::Text(Some(s)) | Val::Json(Some(s)), Ty::Text | Ty::Json) => escape(out, s),
        (Val::Int(Some(n)), Ty::Int) => {
            let _ = write!(out, "{n}");
        }
        (Val::Bool(b), Ty::Bool) => out.push(if *b { 't' } else { 'f' }),
        (Val::Bytes(Some(b)), Ty::Bytes) => {
            // bytea's hex input, its backslash escaped for COPY.
            out.push_str("\\\\x");
            for byte in b {
                let _ = write!(out, "{byte:02x}");
            }
        }
        (Val::Instant(Some(t)), Ty::Instant) => out.push_str(&format_instant(t)),
        (v, _) => return Err(format!("{v:?}")),
    }
    Ok(())
}

/// COPY's text escapes: backslash, and the delimiter and line ends inside a value.
fn escape(out: &mut String, s: &str) {
    if !s.contains(['\\', '\t', '\n', '\r']) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_escapes_and_nulls() {
        let mut out = String::new();
        for (v, ty) in [
            (Val::text("a\\b\tc\nd\re"), Ty::Text),
            (Val::Text(None), Ty::Text),
            (Val::Int(Some(-7)), Ty::Int),
            (Val::Bool(false), Ty::Bool),
            (Val::Bytes(Some(vec![0, 255])), Ty::Bytes),
        ] {
            field(&mut out, &v, ty).unwrap();
            out.push('|');
        }
        assert_eq!(out, "a\\\\b\\tc\\nd\\re|\\N|-7|f|\\\\x00ff|");
        assert!(field(&mut out, &Val::Int(Some(1)), Ty::Text).is_err());
    }
}
