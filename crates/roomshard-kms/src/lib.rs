//! [`KeyManager`](roomshard_core::KeyManager) providers for roomshard.
//!
//! - [`local`]: keys in a directory on this machine (the embedded default): room keys, grants,
//!   data-key wrapping with AES-256-GCM, and the platform's ECDSA P-256 export-signing key.
//!
//! AWS KMS and Vault transit providers will live here too, each behind its own cargo feature,
//! so that the local provider never pulls a cloud SDK.

pub mod local;

pub use local::LocalKeyManager;
