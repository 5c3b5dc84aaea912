// CPU per Argon2id verification (m=19456, t=2, p=1) with @node-rs/argon2, for the `argon2_cpu`
// example. Usage: node argon2_node_rs.mjs <dir holding node_modules/@node-rs/argon2> <count>.
// Prints one JSON line; CPU is process.cpuUsage (user + system) over the timed verifications.
import { createRequire } from 'node:module';
import path from 'node:path';

const [dir, count] = process.argv.slice(2);
const require = createRequire(path.resolve(dir) + '/');
const { hashSync, verifySync, Algorithm } = require('@node-rs/argon2');
const version = require('@node-rs/argon2/package.json').version;
const n = Number(count ?? 20);
const password = 'correct horse battery staple';
const phc = hashSync(password, { memoryCost: 19456, timeCost: 2, parallelism: 1, algorithm: Algorithm.Argon2id });
for (let i = 0; i < 2; i++) verifySync(phc, password);
const before = process.cpuUsage();
let ok = 0;
for (let i = 0; i < n; i++) ok += verifySync(phc, password) ? 1 : 0;
const used = process.cpuUsage(before);
if (ok !== n) throw new Error('a verification failed');
console.log(JSON.stringify({ version, n, cpu_ms: (used.user + used.system) / 1000 / n, sys_ms: used.system / 1000 / n }));
