//! Verifies roomshard room bundles (`room_<id>.tar.zst`), the format in `docs/bundle-format.md`.
//!
//! This crate is the part of roomshard that strangers audit and that runs in browsers, so it is
//! kept small and self-contained: no async runtime, no filesystem or network access of its own,
//! edition 2021 and rustc 1.63 so it also builds for `wasm32-unknown-unknown` with Debian's
//! toolchain. It streams: memory is bounded by [`VerifyLimits`], never by the archive's size.
//!
//! Two entry points do the same work:
//! - [`verify_reader`] pulls from any [`std::io::Read`];
//! - [`Verifier`] is pushed chunks (`update`) and then `finish`ed — what a browser does with
//!   `ReadableStream` chunks.
//!
//! ```no_run
//! use roomshard_verify::{verify_reader, TrustedKeys, VerifyOptions};
//! let keys = TrustedKeys::from_json(&std::fs::read("trusted-keys.json")?)?;
//! let report = verify_reader(std::fs::File::open("room_general.tar.zst")?, keys, VerifyOptions::default());
//! println!("{}", report.to_json());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod archive;
pub mod copy;
pub mod dsse;
mod error;
pub mod format;
mod keys;
pub mod names;
mod report;
pub mod sql;
mod sqlscan;
mod tar;
mod verifier;

pub use dsse::{
    pae, verify_receipt, verify_sidecar, Envelope, EnvelopeSignature, ExportPredicate,
    ReceiptPredicate, SidecarInfo, SigstoreBundle, Statement, Subject, VerifiedReceipt,
};
pub use error::{Reason, VerifyError};
pub use format::{Algorithm, KeySet, Manifest, TrustedKey};
pub use keys::TrustedKeys;
pub use report::{FileResult, FileStatus, Report, SignerInfo, TableResult};
pub use verifier::{
    verify_reader, verify_reader_with_manifest, Verifier, VerifyLimits, VerifyOptions,
};
