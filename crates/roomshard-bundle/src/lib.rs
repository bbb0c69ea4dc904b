//! roomshard bundle writer (being written).
