// Throughput of the WASM verifier under Node (see docs/wasm.md):
//   node wasm/bench-node.mjs ARCHIVE TRUSTED_KEYS_JSON [--runs N] [--chunk BYTES] [--hash-archive]
// Reads the archive into memory first (so disk speed is not measured), then feeds it to
// WasmVerifier in CHUNK-byte pieces (default 1 MiB) and prints compressed and decompressed MB/s
// (1 MB = 10^6 bytes), median of N runs (default 3), per wall second and per CPU second.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const flag = (name, dflt) => {
  const i = args.indexOf(name);
  if (i < 0) return dflt;
  const v = args[i + 1];
  args.splice(i, 2);
  return Number(v);
};
const runs = flag('--runs', 3);
const chunk = flag('--chunk', 1 << 20);
const hashArchive = args.includes('--hash-archive');
const [archivePath, keysPath] = args.filter((a) => a !== '--hash-archive');
if (!archivePath || !keysPath) {
  console.error('usage: node wasm/bench-node.mjs ARCHIVE TRUSTED_KEYS_JSON [--runs N] [--chunk BYTES] [--hash-archive]');
  process.exit(2);
}

const here = dirname(fileURLToPath(import.meta.url));
const wasm = createRequire(import.meta.url)(join(here, 'pkg-node', 'roomshard_verify_wasm.js'));
const archive = readFileSync(archivePath);
const keys = readFileSync(keysPath, 'utf8');
const options = JSON.stringify({ hash_archive: hashArchive });

const times = [];
const cpus = [];
let report;
for (let r = 0; r < runs; r++) {
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const v = new wasm.WasmVerifier(keys, options);
  for (let i = 0; i < archive.length; i += chunk) {
    if (!v.update(archive.subarray(i, i + chunk))) break;
  }
  report = JSON.parse(v.finish());
  times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  const c = process.cpuUsage(c0);
  cpus.push((c.user + c.system) / 1e6);
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const s = median(times);
const cpu = median(cpus);
console.log(JSON.stringify({
  archive: archivePath,
  valid: report.valid,
  error: report.error,
  compressed_bytes: report.compressed_bytes,
  decompressed_bytes: report.decompressed_bytes,
  chunk,
  hash_archive: hashArchive,
  runs: times.map((t) => +t.toFixed(3)),
  median_s: +s.toFixed(3),
  median_cpu_s: +cpu.toFixed(3),
  compressed_MB_per_s: +(report.compressed_bytes / s / 1e6).toFixed(1),
  decompressed_MB_per_s: +(report.decompressed_bytes / s / 1e6).toFixed(1),
  // Per CPU-second: steadier than wall time on a loaded machine (the verifier is single-threaded).
  decompressed_MB_per_cpu_s: +(report.decompressed_bytes / cpu / 1e6).toFixed(1),
}, null, 2));
