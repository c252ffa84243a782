// Writes node_modules/.moe-generated/mistral/tokenizer.json: the vocabulary
// and merges of Mistral 7B and Mixtral 8x7B, as mistral-tokenizer-js ships
// them, in the layout of Mixtral's HF tokenizer.json (Prepend and Replace
// normalizers, byte fallback, a BOS template; merges in the [a, b] form).
// Then checks the file: tokenizers.js must encode every corpus text that
// holds no special-token string exactly as mistral-tokenizer-js does.
// Usage: node make-mistral-tokenizer.mjs CORPUS_JSONL
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import mistral from "mistral-tokenizer-js";
import { Tokenizer } from "@huggingface/tokenizers";

const here = path.dirname(fileURLToPath(import.meta.url));
const output = path.join(here, "node_modules/.moe-generated/mistral/tokenizer.json");

const vocab = Object.fromEntries(mistral.vocabById.map((token, id) => [token, id]));
// mistral.merges maps "left right" to its priority.
const merges = [...mistral.merges.entries()]
  .sort((a, b) => a[1] - b[1])
  .map(([pair]) => {
    const space = pair.indexOf(" ");
    return [pair.slice(0, space), pair.slice(space + 1)];
  });
const special = (id, content) => ({
  id, content, single_word: false, lstrip: false, rstrip: false,
  normalized: false, special: true,
});
const tokenizerJson = {
  version: "1.0",
  truncation: null,
  padding: null,
  added_tokens: [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
  normalizer: {
    type: "Sequence",
    normalizers: [
      { type: "Prepend", prepend: "\u2581" },
      { type: "Replace", pattern: { String: " " }, content: "\u2581" },
    ],
  },
  pre_tokenizer: null,
  post_processor: {
    type: "TemplateProcessing",
    single: [
      { SpecialToken: { id: "<s>", type_id: 0 } },
      { Sequence: { id: "A", type_id: 0 } },
    ],
    pair: [
      { SpecialToken: { id: "<s>", type_id: 0 } },
      { Sequence: { id: "A", type_id: 0 } },
      { SpecialToken: { id: "<s>", type_id: 1 } },
      { Sequence: { id: "B", type_id: 1 } },
    ],
    special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
  },
  decoder: {
    type: "Sequence",
    decoders: [
      { type: "Replace", pattern: { String: "\u2581" }, content: " " },
      { type: "ByteFallback" },
      { type: "Fuse" },
      { type: "Strip", content: " ", start: 1, stop: 0 },
    ],
  },
  model: {
    type: "BPE", dropout: null, unk_token: "<unk>",
    continuing_subword_prefix: null, end_of_word_suffix: null,
    fuse_unk: true, byte_fallback: true, ignore_merges: false,
    vocab, merges,
  },
};

const tokenizer = new Tokenizer(tokenizerJson, {});
const corpus = fs.readFileSync(process.argv[2], "utf8").split("\n");
let checked = 0;
for (const line of corpus) {
  if (line.length === 0) continue;
  const { text } = JSON.parse(line);
  // mistral-tokenizer-js knows no special tokens and always adds BOS.
  if (text === undefined || text.length === 0 || /<\/?s>|<unk>/.test(text))
    continue;
  const want = JSON.stringify(mistral.encode(text, true, true));
  const got = JSON.stringify(tokenizer.encode(text).ids);
  if (want !== got) {
    console.error(`make-mistral-tokenizer: the generated file disagrees with ` +
                  `mistral-tokenizer-js on ${JSON.stringify(text)}`);
    process.exit(1);
  }
  ++checked;
}
fs.mkdirSync(path.dirname(output), { recursive: true });
fs.writeFileSync(output, JSON.stringify(tokenizerJson));
console.log(`make-mistral-tokenizer: wrote ${output} ` +
            `(agrees with mistral-tokenizer-js on ${checked} texts)`);
