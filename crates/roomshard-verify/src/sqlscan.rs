//! Streaming scan of `db.sql`: records the skeleton (lines outside COPY data) and per-block row
//! and field counts without buffering rows.
