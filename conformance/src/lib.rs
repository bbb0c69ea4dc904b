//! roomshard conformance (being written).
