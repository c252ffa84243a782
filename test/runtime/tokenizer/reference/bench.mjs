// Encoding throughput of the reference implementation (tokenizers.js) on one
// core, for moe-tokenizer-bench. Encodes every text of the corpus, first
// once, then repeatedly for at least SECONDS, and prints one JSON object.
// Usage: node bench.mjs TOKENIZER_JSON CORPUS_JSONL SECONDS
import fs from "node:fs";
import { Tokenizer } from "@huggingface/tokenizers";

const [tokenizerPath, corpusPath, secondsArg] = process.argv.slice(2);
const minimumSeconds = Number(secondsArg ?? "2");
const loadStart = process.hrtime.bigint();
const tokenizer = new Tokenizer(
  JSON.parse(fs.readFileSync(tokenizerPath, "utf8")),
  {},
);
const loadSeconds = Number(process.hrtime.bigint() - loadStart) / 1e9;

const texts = fs
  .readFileSync(corpusPath, "utf8")
  .split("\n")
  .filter((line) => line.length > 0)
  .map((line) => JSON.parse(line))
  .filter((entry) => entry.text !== undefined)
  .map((entry) => entry.text);
const bytesPerPass = texts.reduce((n, t) => n + Buffer.byteLength(t), 0);

const pass = () => {
  let tokens = 0;
  for (const text of texts)
    tokens += tokenizer.encode(text, { add_special_tokens: false }).ids.length;
  return tokens;
};
const firstStart = process.hrtime.bigint();
const tokensPerPass = pass();
const firstSeconds = Number(process.hrtime.bigint() - firstStart) / 1e9;

let passes = 0;
const start = process.hrtime.bigint();
let seconds = 0;
do {
  pass();
  ++passes;
  seconds = Number(process.hrtime.bigint() - start) / 1e9;
} while (seconds < minimumSeconds);

console.log(
  JSON.stringify({
    loadSeconds,
    bytesPerPass,
    tokensPerPass,
    firstPassSeconds: firstSeconds,
    passes,
    seconds,
  }),
);
