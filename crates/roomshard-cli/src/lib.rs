//! Library side of the `roomshard` command line: the pieces integration tests (and other
//! binaries) reuse. The `roomshard` binary (`src/main.rs`) calls into these modules.
//!
//! - [`lite`]: `roomshard lite serve`, a read-only web viewer of a home's rooms ("Mesh-Lite").

#![forbid(unsafe_code)]

pub mod lite;
