//! Reading columns of the types both backends store: text, 64-bit integers, and booleans as 0/1.
//! A value of another type is a `StoreError`, never a panic.

use sqlx::any::AnyRow;
use sqlx::Row;
use warren_core::Tier;

use crate::StoreError;

pub(crate) fn text(r: &AnyRow, col: &str) -> Result<String, StoreError> {
    Ok(r.try_get(col)?)
}

pub(crate) fn opt_text(r: &AnyRow, col: &str) -> Result<Option<String>, StoreError> {
    Ok(r.try_get(col)?)
}

pub(crate) fn int(r: &AnyRow, col: &str) -> Result<i64, StoreError> {
    Ok(r.try_get(col)?)
}

pub(crate) fn opt_int(r: &AnyRow, col: &str) -> Result<Option<i64>, StoreError> {
    Ok(r.try_get(col)?)
}

pub(crate) fn uint(r: &AnyRow, col: &str) -> Result<u32, StoreError> {
    let v = int(r, col)?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{col} = {v}")))
}

pub(crate) fn tier(r: &AnyRow, col: &str) -> Result<Tier, StoreError> {
    let v = text(r, col)?;
    v.parse()
        .map_err(|_| StoreError::Corrupt(format!("{col} = {v:?}")))
}

pub(crate) fn flag(r: &AnyRow, col: &str) -> Result<bool, StoreError> {
    Ok(int(r, col)? != 0)
}
