//! roomshard core (being written).
