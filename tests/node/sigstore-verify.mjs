// Verifies a roomshard sidecar (room_<id>.tar.zst.sigstore.json, docs/bundle-format.md §7) with the
// real npm library @sigstore/verify, offline, using only the exporter's public key: no Rekor, no
// Fulcio, no TUF.
//
//   node sigstore-verify.mjs SIDECAR.json PUB.pem ARCHIVE [--key-id ID]
//
// Exit 0: the DSSE signature verifies with PUB.pem and the in-toto subject digest is the SHA-256
//         of ARCHIVE; the statement is printed on stdout as JSON.
// Exit 1: verification failed (reason on stderr: "signature: ..." or "subject digest mismatch ...").
// Exit 2: usage error or unreadable input.
//
// @sigstore/verify selects the key ONLY by verificationMaterial.publicKey.hint (signatures[].keyid
// is ignored), and for DSSE bundles it does NOT compare the subject digest with the artifact —
// this script does that itself.
import crypto from 'node:crypto';
import fs from 'node:fs';
import verifyPkg from '@sigstore/verify'; // CJS packages: default import
import bundlePkg from '@sigstore/bundle';

const { toTrustMaterial, toSignedEntity, Verifier } = verifyPkg;
const { bundleFromJSON } = bundlePkg;

const PAYLOAD_TYPE = 'application/vnd.in-toto+json';
const STATEMENT_TYPE = 'https://in-toto.io/Statement/v1';
const PREDICATE_TYPE = 'https://roomshard.dev/export/v1';

function usage(msg) {
  if (msg) console.error(`sigstore-verify: ${msg}`);
  console.error('usage: node sigstore-verify.mjs SIDECAR.json PUB.pem ARCHIVE [--key-id ID]');
  process.exit(2);
}

function fail(msg) {
  console.error(`sigstore-verify: FAILED: ${msg}`);
  process.exit(1);
}

const args = process.argv.slice(2);
let keyId;
const pos = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--key-id') {
    keyId = args[++i];
    if (!keyId) usage('--key-id needs a value');
  } else if (args[i].startsWith('-')) {
    usage(`unknown option ${args[i]}`);
  } else {
    pos.push(args[i]);
  }
}
if (pos.length !== 3) usage();
const [sidecarPath, pubPath, archivePath] = pos;

let sidecarJson, pubPem, archiveSha256;
try {
  sidecarJson = JSON.parse(fs.readFileSync(sidecarPath, 'utf8'));
  pubPem = fs.readFileSync(pubPath, 'utf8');
  const h = crypto.createHash('sha256');
  const fd = fs.openSync(archivePath, 'r');
  const buf = Buffer.alloc(1 << 20);
  for (let n; (n = fs.readSync(fd, buf, 0, buf.length, null)) > 0; ) h.update(buf.subarray(0, n));
  fs.closeSync(fd);
  archiveSha256 = h.digest('hex');
} catch (e) {
  usage(`reading inputs: ${e.message}`);
}

// 1. Structure (throws ValidationError on a malformed bundle).
let bundle;
try {
  bundle = bundleFromJSON(sidecarJson);
} catch (e) {
  fail(`bundle: ${e.name}: ${e.message}`);
}
if (bundle.content?.$case !== 'dsseEnvelope') fail('bundle: content is not a dsseEnvelope');
const hint = bundle.verificationMaterial?.content?.$case === 'publicKey'
  ? bundle.verificationMaterial.content.publicKey.hint
  : undefined;
if (!hint) fail('bundle: verificationMaterial.publicKey.hint is missing');
if (keyId !== undefined && hint !== keyId) fail(`bundle: key hint ${hint} is not the expected ${keyId}`);

// 2. Signature over PAE(payloadType, payload) with the given public key, offline.
try {
  const trust = toTrustMaterial(
    { certificateAuthorities: [], timestampAuthorities: [], tlogs: [], ctlogs: [] },
    { [hint]: { rawBytes: pubPem } },
  );
  const verifier = new Verifier(trust, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 });
  verifier.verify(toSignedEntity(bundle));
} catch (e) {
  fail(`signature: ${e.name}: ${e.code ?? ''} ${e.message}`);
}

// 3. The statement, and its subject digest against the archive (the library does not do this).
const env = bundle.content.dsseEnvelope;
if (env.payloadType !== PAYLOAD_TYPE) fail(`statement: payloadType ${env.payloadType}`);
let stmt;
try {
  stmt = JSON.parse(env.payload.toString('utf8'));
} catch (e) {
  fail(`statement: payload is not JSON: ${e.message}`);
}
if (stmt._type !== STATEMENT_TYPE) fail(`statement: _type ${stmt._type}`);
if (stmt.predicateType !== PREDICATE_TYPE) fail(`statement: predicateType ${stmt.predicateType}`);
if (!Array.isArray(stmt.subject) || stmt.subject.length !== 1) fail('statement: expected exactly one subject');
const claimed = stmt.subject[0]?.digest?.sha256;
if (claimed !== archiveSha256) {
  fail(`subject digest mismatch: statement says ${claimed}, ${archivePath} has sha256 ${archiveSha256}`);
}

console.log(JSON.stringify({ verified: true, key_hint: hint, archive_sha256: archiveSha256, statement: stmt }));
