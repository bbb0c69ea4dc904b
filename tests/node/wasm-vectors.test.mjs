// Every golden vector (conformance/vectors/*.tar.zst + .expect) through the WASM verifier in Node:
// the verdict and reason code must match the .expect file, whatever the chunking.
//
//   bash wasm/build.sh && node --test tests/node/
//
// ROOMSHARD_VECTORS_DIR overrides the vectors directory (default conformance/vectors),
// ROOMSHARD_WASM_PKG the wasm-bindgen --target nodejs output (default wasm/pkg-node).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHash, createPrivateKey, createPublicKey, sign as cryptoSign } from 'node:crypto';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const PKG = resolve(process.env.ROOMSHARD_WASM_PKG ?? join(ROOT, 'wasm', 'pkg-node'), 'roomshard_verify_wasm.js');
const VECTORS = resolve(process.env.ROOMSHARD_VECTORS_DIR ?? join(ROOT, 'conformance', 'vectors'));
const MIN_VECTORS = 30;
const LIMIT_KEYS = new Set([
  'max_total_bytes', 'max_ratio', 'ratio_grace_bytes', 'max_entries',
  'max_manifest_bytes', 'max_sql_skeleton_bytes', 'max_window_log',
]);

// Missing prerequisites are failures, not skips: a green run must mean the vectors were checked.
if (!existsSync(PKG)) {
  throw new Error(`WASM build missing: ${PKG} does not exist. Run \`bash wasm/build.sh\` first.`);
}
const wasm = createRequire(import.meta.url)(PKG);

/** Parses a .expect file: `expect: valid|fail_<reason>`, optional `limits: k=v ...` lines. */
function parseExpect(text, name) {
  const lines = text.split('\n');
  const m = /^expect: (valid|fail_([a-z0-9_]+))$/.exec(lines[0].trimEnd());
  assert.ok(m, `${name}.expect: first line must be "expect: valid" or "expect: fail_<reason>", got ${JSON.stringify(lines[0])}`);
  const options = {};
  for (const line of lines.slice(1)) {
    if (!line.startsWith('limits: ')) continue;
    for (const pair of line.slice('limits: '.length).trim().split(/\s+/)) {
      const [k, v] = pair.split('=');
      assert.ok(LIMIT_KEYS.has(k) && /^\d+$/.test(v ?? ''), `${name}.expect: bad limit ${JSON.stringify(pair)}`);
      options[k] = Number(v);
    }
  }
  return { failure: m[2] ?? null, options };
}

function loadVectors() {
  assert.ok(existsSync(VECTORS), `vectors directory ${VECTORS} does not exist`);
  const out = [];
  for (const file of readdirSync(VECTORS).sort()) {
    if (!file.endsWith('.tar.zst')) continue;
    const name = file.slice(0, -'.tar.zst'.length);
    const expectPath = join(VECTORS, `${name}.expect`);
    assert.ok(existsSync(expectPath), `${name}.tar.zst has no ${name}.expect`);
    out.push({ name, archive: readFileSync(join(VECTORS, file)), ...parseExpect(readFileSync(expectPath, 'utf8'), name) });
  }
  return out;
}

const keysPath = join(VECTORS, 'trusted-keys.json');
const vectors = existsSync(VECTORS) ? loadVectors() : [];
const trustedKeys = existsSync(keysPath) ? readFileSync(keysPath, 'utf8') : null;

/** Runs one archive through WasmVerifier in `chunk`-byte pieces; returns the parsed report. */
function verifyChunked(archive, options, chunk) {
  const v = new wasm.WasmVerifier(trustedKeys, JSON.stringify(options));
  for (let i = 0; i < archive.length; i += chunk) {
    if (!v.update(archive.subarray(i, i + chunk))) break;
  }
  return JSON.parse(v.finish());
}

function assertVerdict(report, failure, what) {
  const got = report.error ? report.error.reason : null;
  assert.equal(got, failure, `${what}: expected ${failure ?? 'valid'}, got ${got ?? 'valid'}` +
    (report.error ? ` (${report.error.detail})` : ''));
  assert.equal(report.valid, failure === null, `${what}: report.valid is ${report.valid}`);
}

test(`there are at least ${MIN_VECTORS} vectors and a trusted key set`, () => {
  assert.ok(trustedKeys !== null, `${keysPath} is missing (generate the vectors: cargo run -p roomshard-conformance --bin gen-vectors)`);
  assert.ok(vectors.length >= MIN_VECTORS, `only ${vectors.length} vectors in ${VECTORS}; expected at least ${MIN_VECTORS}`);
  assert.ok(vectors.some((v) => v.failure === null), 'no valid vector');
});

test('every vector gives its expected verdict (64 KiB chunks, 13-byte chunks, one shot)', () => {
  assert.ok(vectors.length >= MIN_VECTORS && trustedKeys !== null, 'vectors missing (see the first test)');
  const wrong = [];
  for (const { name, archive, failure, options } of vectors) {
    const runs = [
      [`${name} (64 KiB chunks, hash_archive)`, () => verifyChunked(archive, { ...options, hash_archive: true }, 64 << 10)],
      [`${name} (13-byte chunks)`, () => verifyChunked(archive, options, 13)],
      [`${name} (verify())`, () => JSON.parse(wasm.verify(archive, trustedKeys, JSON.stringify(options)))],
    ];
    for (const [what, run] of runs) {
      try {
        assertVerdict(run(), failure, what);
      } catch (e) {
        wrong.push(e.message);
      }
    }
  }
  assert.deepEqual(wrong, [], `vectors with the wrong verdict:\n${wrong.join('\n')}`);
});

test('small vectors give the same verdict fed one byte at a time', () => {
  assert.ok(vectors.length >= MIN_VECTORS && trustedKeys !== null, 'vectors missing (see the first test)');
  const small = vectors.filter((v) => v.archive.length <= 256 << 10);
  assert.ok(small.length > 0, 'no vector of 256 KiB or less');
  const wrong = [];
  for (const { name, archive, failure, options } of small) {
    try {
      assertVerdict(verifyChunked(archive, options, 1), failure, `${name} (1-byte chunks)`);
    } catch (e) {
      wrong.push(e.message);
    }
  }
  assert.deepEqual(wrong, [], `vectors with the wrong verdict:\n${wrong.join('\n')}`);
});

test('valid vectors report signer, room, manifest digest and the archive digest when asked', () => {
  const valid = vectors.filter((v) => v.failure === null);
  assert.ok(valid.length > 0, 'no valid vector');
  for (const { name, archive, options } of valid) {
    const r = verifyChunked(archive, { ...options, hash_archive: true }, 64 << 10);
    assert.ok(r.signer && r.signer.key_id, `${name}: no signer`);
    assert.ok(r.room && r.room.id, `${name}: no room`);
    assert.match(r.manifest_sha256 ?? '', /^[0-9a-f]{64}$/, `${name}: manifest_sha256`);
    assert.equal(r.archive_sha256, createHash('sha256').update(archive).digest('hex'), `${name}: archive_sha256`);
    assert.equal(r.compressed_bytes, archive.length, `${name}: compressed_bytes`);
  }
});

test('update() returns false once refused and never throws; finish() still reports', () => {
  const v = new wasm.WasmVerifier(trustedKeys ?? '{"keys":[]}');
  assert.equal(v.update(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8])), false); // not zstd
  assert.equal(v.update(new Uint8Array(100)), false);
  const r = JSON.parse(v.finish());
  assert.equal(r.valid, false);
  assert.equal(typeof r.error.reason, 'string');
});

test('key_validity_at judges the key window at a chosen time, as the CLI does', () => {
  const basic = vectors.find((v) => v.name === 'valid_basic');
  assert.ok(basic && trustedKeys !== null, 'valid_basic missing');
  // valid_basic: created 2026-06-01 by a key valid 2026-01-01..2027-01-01.
  const at = (time) =>
    JSON.parse(wasm.verify(basic.archive, trustedKeys, JSON.stringify({ key_validity_at: time })));
  assert.equal(at('2026-12-31T23:59:59Z').valid, true);
  assert.equal(at('2027-01-01T00:00:01Z').error.reason, 'key_expired');
  assert.equal(at('2025-12-31T00:00:00Z').error.reason, 'key_not_yet_valid');
  assert.throws(() => at('2026-02-31T00:00:00Z'), /key_set_invalid/);
  assert.throws(() => at(1), /key_validity_at/);
});

test('caller mistakes throw: bad key set, bad options', () => {
  assert.throws(() => new wasm.WasmVerifier('{'), /key_set_invalid/);
  assert.throws(() => new wasm.WasmVerifier('{"keys":[]}', '{"max_entrys":1}'), /options: unknown limit "max_entrys"/);
  assert.throws(() => new wasm.WasmVerifier('{"keys":[]}', '{"max_entries":-1}'), /options/);
  assert.throws(() => wasm.verify(new Uint8Array(), '{"keys":[]}', 'nope'), /options/);
});

test('finishWithSidecar adds the sidecar verdict without changing the archive verdict', () => {
  const valid = vectors.find((v) => v.failure === null);
  assert.ok(valid && trustedKeys !== null, 'no valid vector');
  // Without hash_archive the sidecar cannot be bound to the archive.
  let v = new wasm.WasmVerifier(trustedKeys, JSON.stringify(valid.options));
  v.update(valid.archive);
  let r = JSON.parse(v.finishWithSidecar('{}'));
  assert.equal(r.valid, true);
  assert.equal(r.sidecar.valid, false);
  assert.equal(r.sidecar.error.reason, 'sidecar_invalid');
  // With it, a malformed sidecar is still sidecar_invalid.
  v = new wasm.WasmVerifier(trustedKeys, JSON.stringify({ ...valid.options, hash_archive: true }));
  v.update(valid.archive);
  r = JSON.parse(v.finishWithSidecar('{"mediaType":"nope"}'));
  assert.equal(r.valid, true);
  assert.equal(r.sidecar.error.reason, 'sidecar_invalid');
});

// A real sidecar, signed here with the vectors' Ed25519 key. Its seed is public (see
// conformance/src/vectors.rs and roomshard-bundle's LocalEd25519Signer::from_seed): the secret is
// SHA-256("roomshard test-vector key v1\0" "ed25519" "\0" [2; 32] be32(0)).
test('a sidecar signed with the vectors\' Ed25519 key verifies; tampering is caught', () => {
  const vec = vectors.find((v) => v.name === 'valid_ed25519');
  assert.ok(vec && vec.failure === null, 'no valid_ed25519 vector');
  const secret = createHash('sha256')
    .update(Buffer.from('roomshard test-vector key v1\0ed25519\0'))
    .update(Buffer.alloc(32, 2))
    .update(Buffer.alloc(4))
    .digest();
  const key = createPrivateKey({
    key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), secret]),
    format: 'der',
    type: 'pkcs8',
  });
  const keyId = 'vectors-ed25519';
  const trusted = JSON.parse(trustedKeys).keys.find((k) => k.id === keyId);
  assert.ok(trusted, `${keyId} is not in trusted-keys.json`);
  assert.equal(createPublicKey(key).export({ type: 'spki', format: 'pem' }).trim(), trusted.public_key_pem.trim(),
    'the derived Ed25519 key is not the trusted one (did the vector key derivation change?)');

  const run = (sidecar) => {
    const w = new wasm.WasmVerifier(trustedKeys, JSON.stringify({ ...vec.options, hash_archive: true }));
    w.update(vec.archive);
    return JSON.parse(w.finishWithSidecar(sidecar));
  };
  const report = run('{}');
  assert.equal(report.valid, true);
  const sidecarFor = ({ digest = report.archive_sha256, tamperSig = false } = {}) => {
    const payloadType = 'application/vnd.in-toto+json';
    const payload = Buffer.from(JSON.stringify({
      _type: 'https://in-toto.io/Statement/v1',
      subject: [{ name: `room_${report.room.id}.tar.zst`, digest: { sha256: digest } }],
      predicateType: 'https://roomshard.dev/export/v1',
      predicate: {
        room: report.room.id,
        manifest_sha256: report.manifest_sha256,
        created_at: report.created_at,
        format_version: report.format_version,
      },
    }));
    const pae = Buffer.concat([
      Buffer.from(`DSSEv1 ${payloadType.length} ${payloadType} ${payload.length} `), payload,
    ]);
    const sig = cryptoSign(null, pae, key);
    if (tamperSig) sig[0] ^= 1;
    return JSON.stringify({
      mediaType: 'application/vnd.dev.sigstore.bundle.v0.3+json',
      verificationMaterial: { publicKey: { hint: keyId }, tlogEntries: [] },
      dsseEnvelope: {
        payload: payload.toString('base64'),
        payloadType,
        signatures: [{ keyid: keyId, sig: sig.toString('base64') }],
      },
    });
  };

  let r = run(sidecarFor());
  assert.equal(r.valid, true);
  assert.deepEqual(r.sidecar, { valid: true, key_id: keyId, subject_name: `room_${report.room.id}.tar.zst` });
  r = run(sidecarFor({ digest: '0'.repeat(64) }));
  assert.equal(r.valid, true);
  assert.equal(r.sidecar.error.reason, 'sidecar_digest_mismatch');
  r = run(sidecarFor({ tamperSig: true }));
  assert.equal(r.sidecar.error.reason, 'sidecar_signature_invalid');
});
