// Runs the reference implementation (tokenizers.js) over the parity corpus
// and prints one JSON line per case for the C++ side to compare with:
//   {"kind": "encode", "line": n, "ids": [...], "plainIds": [...],
//    "text": ..., "textSkipSpecial": ...}   for {"text": ...} corpus lines
//   {"kind": "decode", "ids": [...], "text": ..., "textSkipSpecial": ...}
// for {"bytes": ...} corpus lines (spelled with byte tokens) and for
// seeded random id sequences.
// Usage: node reference.mjs TOKENIZER_JSON CORPUS_JSONL
import fs from "node:fs";
import { Tokenizer } from "@huggingface/tokenizers";

const [tokenizerPath, corpusPath] = process.argv.slice(2);
const tokenizerJson = JSON.parse(fs.readFileSync(tokenizerPath, "utf8"));
// An empty tokenizer_config: the C++ side reads tokenizer.json alone.
const tokenizer = new Tokenizer(tokenizerJson, {});

const decode = (ids, skipSpecial) =>
  ids.length === 0
    ? ""
    : tokenizer.decode(ids, {
        skip_special_tokens: skipSpecial,
        clean_up_tokenization_spaces: false,
      });

// GPT-2's byte-level alphabet.
const byteLevelCharacter = (() => {
  const printable = (b) =>
    (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
  const table = [];
  let next = 256;
  for (let b = 0; b < 256; ++b)
    table.push(String.fromCodePoint(printable(b) ? b : next++));
  return table;
})();

const byteFallback = tokenizerJson.model.byte_fallback === true;
const byteTokenId = (byte) => {
  const token = byteFallback
    ? `<0x${byte.toString(16).toUpperCase().padStart(2, "0")}>`
    : byteLevelCharacter[byte];
  const id = tokenizer.token_to_id(token);
  if (id === undefined) throw new Error(`no token for byte ${byte}`);
  return id;
};

const lines = [];
const emit = (record) => lines.push(JSON.stringify(record));
const decodeCase = (ids) =>
  emit({
    kind: "decode",
    ids,
    text: decode(ids, false),
    textSkipSpecial: decode(ids, true),
  });

const corpus = fs.readFileSync(corpusPath, "utf8").split("\n");
corpus.forEach((line, index) => {
  if (line.length === 0) return;
  const entry = JSON.parse(line);
  if (entry.text !== undefined) {
    const ids = tokenizer.encode(entry.text, { add_special_tokens: true }).ids;
    const plainIds = tokenizer.encode(entry.text, {
      add_special_tokens: false,
    }).ids;
    emit({
      kind: "encode",
      line: index,
      ids,
      plainIds,
      text: decode(ids, false),
      textSkipSpecial: decode(ids, true),
    });
  } else {
    const bytes = Buffer.from(entry.bytes, "hex");
    decodeCase(Array.from(bytes, byteTokenId));
  }
});

// Random id sequences, weighted towards added tokens and byte tokens, whose
// decoding has the most special cases. mulberry32 keeps them reproducible.
let seed = 0x5eed1234;
const random = () => {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const vocabulary = tokenizer.get_vocab(true);
const definedIds = [...vocabulary.values()].sort((a, b) => a - b);
const addedIds = tokenizerJson.added_tokens.map((token) => token.id);
const pick = (list) => list[Math.floor(random() * list.length)];
for (let i = 0; i < 300; ++i) {
  const length = 1 + Math.floor(random() * 24);
  const ids = [];
  for (let j = 0; j < length; ++j) {
    const r = random();
    if (r < 0.15) ids.push(pick(addedIds));
    else if (r < 0.35) ids.push(byteTokenId(Math.floor(random() * 256)));
    else ids.push(pick(definedIds));
  }
  decodeCase(ids);
}

process.stdout.write(lines.join("\n") + "\n");
