//! Reading and writing JSON records in the store.

use socketplane_store::{KeyValue, Revision, Store};

use crate::error::{Error, Result};

pub fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(Error::Encode)
}

pub fn decode<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Result<T> {
    serde_json::from_slice(&kv.value).map_err(|source| Error::Decode {
        key: kv.key.clone(),
        source,
    })
}

/// Every record under a prefix, decoded.
pub async fn list<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    prefix: &str,
) -> Result<Vec<T>> {
    let listing = store.list(prefix).await?;
    listing.kvs.iter().map(decode).collect()
}

/// One record and its revision, or `NotFound` with `missing`.
pub async fn get<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    key: &str,
    missing: impl FnOnce() -> String,
) -> Result<(T, Revision)> {
    match store.get(key).await? {
        Some(kv) => Ok((decode(&kv)?, kv.mod_revision)),
        None => Err(Error::NotFound(missing())),
    }
}

/// One record, if present.
pub async fn find<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    key: &str,
) -> Result<Option<(T, Revision)>> {
    match store.get(key).await? {
        Some(kv) => Ok(Some((decode(&kv)?, kv.mod_revision))),
        None => Ok(None),
    }
}
