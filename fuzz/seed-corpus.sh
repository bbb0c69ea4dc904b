#!/usr/bin/env bash
# Seeds the fuzz corpora from the golden vectors (corpus dirs are gitignored).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
vectors="$here/../conformance/vectors"
mkdir -p "$here/corpus/verify_archive" "$here/corpus/parse_manifest" "$here/corpus/copy_codec" "$here/corpus/import_archive"
shopt -s nullglob
n=0
for f in "$vectors"/*.tar.zst; do
    cp -f "$f" "$here/corpus/verify_archive/$(basename "$f")"
    cp -f "$f" "$here/corpus/import_archive/$(basename "$f")"
    n=$((n + 1))
    # The manifests inside the valid vectors seed parse_manifest.
    if command -v zstd >/dev/null && command -v tar >/dev/null; then
        zstd -dcq "$f" 2>/dev/null | tar -xOf - manifest.json \
            >"$here/corpus/parse_manifest/$(basename "$f" .tar.zst).json" 2>/dev/null \
            || rm -f "$here/corpus/parse_manifest/$(basename "$f" .tar.zst).json"
        # Their db.sql (COPY data and all) seeds copy_codec.
        zstd -dcq "$f" 2>/dev/null | tar -xOf - db.sql \
            >"$here/corpus/copy_codec/$(basename "$f" .tar.zst).sql" 2>/dev/null \
            || rm -f "$here/corpus/copy_codec/$(basename "$f" .tar.zst).sql"
    fi
done
find "$here/corpus/parse_manifest" "$here/corpus/copy_codec" -type f -empty -delete
echo "seeded $n archive(s) into fuzz/corpus/verify_archive"
