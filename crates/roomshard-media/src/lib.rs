//! roomshard [`MediaStore`](roomshard_core::MediaStore) providers.
//!
//! - [`local::LocalMediaStore`]: one directory per room on `object_store`'s local file system
//!   store, with client-side envelope encryption (AES-256-GCM STREAM in 64 KiB chunks, a
//!   per-object data key wrapped by the room's [`KeyManager`](roomshard_core::KeyManager) key)
//!   and HMAC-signed URLs.

mod envelope;
pub mod local;
mod signed_url;

pub use local::{LocalMediaStore, MAX_PRESIGN_EXPIRY_SECS};
pub use signed_url::SignedObject;
