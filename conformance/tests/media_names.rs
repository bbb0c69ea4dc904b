//! Portable media entry names (docs/bundle-format.md §2.1), as a property: for any set of object
//! keys the writer names them so that every name is a valid entry path, no two extract as one
//! file or as a file and a directory at once, and every name decodes back to its own key.

use proptest::prelude::*;
use roomshard_verify::format::validate_path;
use roomshard_verify::names::{PathSet, fold, media_key, media_paths};

/// Key pieces chosen to collide: case, NFC/NFD, `/` placement, dots, `%`, bidi controls.
fn piece() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "a",
        "A",
        "b",
        "B",
        "/",
        "//",
        ".",
        "..",
        "%",
        "%41",
        "caf\u{e9}",
        "cafe\u{301}",
        "\u{202e}",
        "\u{2028}",
        "x.png",
        "X.PNG",
        " ",
        "ß",
        "SS",
    ])
}

fn key() -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 1..5).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_room_gets_portable_names(keys in prop::collection::btree_set(key(), 1..8)) {
        // Any key at all, also those an ObjectKey refuses (`/a`, `a//b`, `.`): the names must
        // still be valid.
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let paths = media_paths(&keys);
        let mut sorted: Vec<(&String, &str)> = paths.iter().zip(keys.iter().copied()).collect();
        sorted.sort();
        let mut set = PathSet::new();
        for (path, key) in sorted {
            prop_assert!(validate_path(path).is_ok(), "{path:?} from {key:?}: {:?}", validate_path(path));
            let decoded = media_key(path).ok();
            prop_assert_eq!(decoded.as_deref(), Some(key));
            if let Err(e) = set.insert(path) {
                prop_assert!(false, "{} among {:?} -> {:?}", e, keys, paths);
            }
        }
        let folded: std::collections::BTreeSet<String> = paths.iter().map(|p| fold(p)).collect();
        prop_assert_eq!(folded.len(), keys.len());
    }
}
