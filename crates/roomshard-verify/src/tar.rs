//! A push-driven, strict ustar reader (regular files only), written here because the `tar` crate
//! is pull-only (`Read`) and the browser pushes chunks.
