//! roomshard facade (in progress).
