//! The flows, one module each, written only against the provider traits.

pub mod abort;
pub mod access;
pub mod audit;
mod chunks;
mod copy;
pub mod decentralise;
pub mod export;
pub mod import;
pub mod recentralise;
pub mod rotate;
pub mod usage;

pub use abort::{AbortOutcome, abort};
pub use access::{regrant, revoke};
pub use audit::{AnchorCheck, AuditCheck, AuditCheckOptions, verify_audit};
pub use decentralise::{
    Adoption, DecentraliseOptions, DecentraliseOutcome, Plan, decentralise, decentralise_with, plan,
};
pub use export::{ExportOptions, ExportOutcome, export, export_to_dir};
pub use import::{
    ArchiveSource, ImportOptions, ImportOutcome, ImportTarget, ReaderFn, import_archive,
    import_file, recover_imports,
};
pub use recentralise::recentralise;
pub use rotate::rotate;
pub use usage::{RoomUsage, usage};
